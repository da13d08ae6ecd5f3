//! `subPath` and `subPathExpr` of volume mounts.
//!
//! A sub path is pod-controlled input naming a path inside a volume, and some
//! volumes (emptyDir, hostPath) hold files a container wrote. So the path is
//! checked lexically (relative, no `..`) and then resolved component by
//! component: missing directories are created, and a symlink is accepted
//! only if it resolves inside the volume. The runtime gets the resolved path,
//! with no symlinks left in it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Expands `$(VAR)` references of a `subPathExpr` from the container's
/// environment, as upstream's expansion does (`$$` is a literal `$`, an
/// unterminated `$(` is kept). A reference to an unset or empty variable is
/// an error naming the variables.
pub fn expand<V: AsRef<str>>(expr: &str, env: &HashMap<&str, V>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut missing = Vec::new();
    let mut rest = expr;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(close) => {
                    let name = &reference[..close];
                    match env.get(name).map(AsRef::as_ref) {
                        Some(value) if !value.is_empty() => out.push_str(value),
                        _ => missing.push(name.to_string()),
                    }
                    rest = &reference[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        missing.sort();
        missing.dedup();
        Err(format!("missing value for {}", missing.join(", ")))
    }
}

/// Upstream's lexical checks of a sub path; the error is the user message.
pub fn validate(sub_path: &str) -> Result<(), String> {
    if sub_path.starts_with('/') {
        return Err(format!(
            "error SubPath `{sub_path}` must not be an absolute path"
        ));
    }
    if sub_path.split('/').any(|part| part == "..") {
        return Err(format!(
            "unable to provision SubPath `{sub_path}`: must not contain '..'"
        ));
    }
    Ok(())
}

/// Why a sub path could not be resolved; logged, not shown to users (it may
/// describe the node's file system).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A missing directory could not be created.
    #[error("creating a missing directory: {0}")]
    Create(#[source] io::Error),
    /// The path escapes the volume or cannot be resolved.
    #[error("resolving the path: {0}")]
    Resolve(#[source] io::Error),
}

/// Resolves `volume/sub_path` (already [`validate`]d), creating missing
/// directories with the volume root's permissions. Returns the resolved path.
pub fn resolve(volume: &Path, sub_path: &str) -> Result<PathBuf, ResolveError> {
    let root = volume.canonicalize().map_err(ResolveError::Resolve)?;
    let root_mode = fs::metadata(&root)
        .map_err(ResolveError::Resolve)?
        .permissions()
        .mode()
        & 0o7777;
    let parts: Vec<_> = Path::new(sub_path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut current = root.clone();
    for (i, part) in parts.iter().enumerate() {
        let next = current.join(part);
        let meta = match fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_dir(&next, root_mode)?;
                current = next;
                continue;
            }
            Err(e) => return Err(ResolveError::Resolve(e)),
        };
        current = if meta.file_type().is_symlink() {
            let target = next.canonicalize().map_err(ResolveError::Resolve)?;
            if !target.starts_with(&root) {
                return Err(ResolveError::Resolve(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{} resolves outside the volume", next.display()),
                )));
            }
            target
        } else {
            next
        };
        let last = i + 1 == parts.len();
        if !last && !current.is_dir() {
            return Err(ResolveError::Resolve(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", current.display()),
            )));
        }
    }
    Ok(current)
}

fn create_dir(path: &Path, mode: u32) -> Result<(), ResolveError> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // Match the volume root despite the umask.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(ResolveError::Create)
        }
        // Created meanwhile (by a container or another mount): fine if it is a
        // real directory, which the next component's check will see.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => Err(ResolveError::Create(e)),
        },
        Err(e) => Err(ResolveError::Create(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references_like_upstream() {
        let env = HashMap::from([("POD", "web-0"), ("NS", "prod"), ("EMPTY", "")]);
        assert_eq!(expand("logs/$(POD)", &env).as_deref(), Ok("logs/web-0"));
        assert_eq!(expand("$(NS)/$(POD)", &env).as_deref(), Ok("prod/web-0"));
        assert_eq!(expand("a$$(POD)", &env).as_deref(), Ok("a$(POD)"));
        assert_eq!(expand("a$(POD", &env).as_deref(), Ok("a$(POD"));
        assert_eq!(expand("cost$5", &env).as_deref(), Ok("cost$5"));
        assert_eq!(expand("end$", &env).as_deref(), Ok("end$"));
        assert_eq!(
            expand("$(B)/$(A)/$(EMPTY)/$(A)", &env),
            Err("missing value for A, B, EMPTY".to_string())
        );
    }

    #[test]
    fn validate_rejects_absolute_and_backsteps() {
        assert!(validate("a/b").is_ok());
        assert!(validate("a..b/c").is_ok());
        assert!(validate("/etc").is_err_and(|e| e.contains("absolute")));
        assert!(validate("a/../../etc").is_err_and(|e| e.contains("'..'")));
    }

    #[test]
    fn resolve_creates_missing_directories_with_the_volume_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        let resolved = resolve(dir.path(), "a/b").expect("resolve");
        assert_eq!(
            resolved,
            dir.path().canonicalize().expect("canon").join("a/b")
        );
        assert!(resolved.is_dir());
        let mode = fs::metadata(&resolved).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
        assert_eq!(resolve(dir.path(), "a/b").expect("again"), resolved);
    }

    #[test]
    fn resolve_follows_symlinks_inside_the_volume_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("outside");
        let vol = dir.path();
        fs::create_dir(vol.join("real")).expect("mkdir");
        fs::write(vol.join("real/file"), "x").expect("write");
        std::os::unix::fs::symlink("real", vol.join("inside")).expect("link");
        std::os::unix::fs::symlink(outside.path(), vol.join("escape")).expect("link");

        let canon = vol.canonicalize().expect("canon");
        assert_eq!(
            resolve(vol, "inside/file").expect("inside"),
            canon.join("real/file")
        );
        assert!(matches!(
            resolve(vol, "escape"),
            Err(ResolveError::Resolve(_))
        ));
        assert!(matches!(
            resolve(vol, "escape/new"),
            Err(ResolveError::Resolve(_))
        ));
        assert!(
            !outside.path().join("new").exists(),
            "nothing created outside"
        );
        assert!(matches!(
            resolve(vol, "real/file/x"),
            Err(ResolveError::Resolve(_))
        ));
    }
}
