//! The differential test, longer: `cargo run --release -p rpcx-interop --example
//! differential -- --requests 30000 --seed 7` sends that many generated requests to
//! the Go server and to a Rust server of each runtime and prints the comparison.
//! Exits non-zero on any undocumented difference.

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let requests = arg("--requests", 30_000) as usize;
    let seed = arg("--seed", 7);
    let start = std::time::Instant::now();
    let report = rpcx_interop::diff::differential(seed, requests);
    eprintln!("seed {seed}, {:.1?}\n{report}", start.elapsed());
    if !report.undocumented.is_empty() {
        std::process::exit(1);
    }
}
