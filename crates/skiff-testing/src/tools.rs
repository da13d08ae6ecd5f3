//! Where the client tools are: `SKIFF_KUBECTL`, `SKIFF_HELM` and `SKIFF_PYTHON`
//! if set, otherwise where `scripts/install-test-tools.sh` puts them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Paths of the real client tools the tests drive.
#[derive(Debug, Clone)]
pub struct Tools {
    /// kubectl 1.37.
    pub kubectl: PathBuf,
    /// helm 4.
    pub helm: PathBuf,
    /// A Python interpreter with the `kubernetes` package.
    pub python: PathBuf,
}

/// The tools, resolved once. Panics, naming the install script, if any is
/// missing: a test that cannot run its client must fail, not pass silently.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let tools_dir = cache_dir().join("tools");
        Tools {
            kubectl: resolve("SKIFF_KUBECTL", &tools_dir.join("bin/kubectl")),
            helm: resolve("SKIFF_HELM", &tools_dir.join("bin/helm")),
            python: resolve("SKIFF_PYTHON", &tools_dir.join("venv/bin/python")),
        }
    })
}

/// `$SKIFF_CACHE`, else `$HOME/.cache/skiff`, as the install script computes it.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKIFF_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/skiff")
}

fn resolve(var: &str, default: &Path) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| default.to_path_buf(), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found (from {}): run scripts/install-test-tools.sh, or set {var}",
        path.display(),
        if std::env::var_os(var).is_some() {
            var
        } else {
            "the install script's cache"
        },
    );
    path
}
