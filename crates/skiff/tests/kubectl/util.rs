//! Helpers shared by the kubectl tests.

use serde_json::Value;
use skiff_testing::TestCluster;

/// The server every test in this binary shares.
pub fn cluster() -> &'static TestCluster {
    skiff_testing::shared(env!("CARGO_BIN_EXE_skiff"))
}

/// `kubectl <args> -o json`, parsed.
pub fn get_json(args: &[&str]) -> Value {
    cluster().get_json(args)
}

pub use skiff_testing::eventually;

/// The lines of a table printed by kubectl, split into whitespace-separated
/// columns (the header is the first row).
pub fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}
