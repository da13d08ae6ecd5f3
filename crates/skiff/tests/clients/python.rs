//! The Python `kubernetes` client: create, list, watch, patch and delete.
//! The assertions are in `client.py`; a failed one exits non-zero.

use std::path::Path;

use skiff_testing::tools;

use super::cluster;

#[test]
fn create_list_watch_patch_delete() {
    let cluster = cluster();
    let ns = cluster.namespace("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/client.py");
    let mut command = cluster.command(&tools().python);
    command.arg(script).arg(ns.name());
    let output = skiff_testing::output_with_timeout(command, None, skiff_testing::DEFAULT_TIMEOUT);
    assert!(
        output.status.success(),
        "client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("python client: ok"));
}
