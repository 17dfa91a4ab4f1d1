//! The core reads no clock: time only comes in as `now` arguments (ARCHITECTURE.md,
//! "One idea"). This scans the crate's own sources, outside tests and doc comments.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read core/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_sources_never_read_the_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found the sources");
    let mut offenders = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            for clock in ["Instant::now", "SystemTime::now", "UNIX_EPOCH.elapsed"] {
                if l.contains(clock) {
                    offenders.push(format!("{}:{}: {}", f.display(), i + 1, l));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "the core reads the clock:\n{}", offenders.join("\n"));
}
