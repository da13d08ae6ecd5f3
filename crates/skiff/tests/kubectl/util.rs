//! Helpers shared by the kubectl tests.

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_testing::TestCluster;

/// The server every test in this binary shares.
pub fn cluster() -> &'static TestCluster {
    skiff_testing::shared(env!("CARGO_BIN_EXE_skiff"))
}

/// `kubectl <args> -o json`, parsed.
pub fn get_json(args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    let out = cluster().kubectl_ok(&full);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("kubectl {full:?} printed bad JSON ({e}):\n{out}"))
}

/// Poll `check` until it returns true; panics after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of a table printed by kubectl, split into whitespace-separated
/// columns (the header is the first row).
pub fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}
