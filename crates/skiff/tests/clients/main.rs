//! Real clients other than kubectl against one shared server: helm, the
//! Python `kubernetes` client and kube-rs.

mod helm;
mod kube_rs;
mod python;

use skiff_testing::TestCluster;

fn cluster() -> &'static TestCluster {
    skiff_testing::shared(env!("CARGO_BIN_EXE_skiff"))
}
