//! The mistakes users make with `#[service]`, and the errors they get.

#[test]
fn service_attribute_mistakes_are_clear_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
