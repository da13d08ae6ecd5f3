//! The node's side of a local-path volume: its directory, made at
//! provisioning and removed at reclaim, and nothing else on the disk.
//!
//! Removal is where a mistake destroys data, and the path it works from is
//! read from a PersistentVolume, which anyone allowed to write PVs can craft:
//! `hostPath: /`, `<storage>/../etc`, another volume's directory, or a
//! symlink planted in the storage directory. So [`volume_dir_to_remove`]
//! accepts a path only when all of these hold:
//!
//! - it is absolute and has no `..` component;
//! - its parent, canonicalized, is the canonicalized storage directory, so
//!   it is a direct child of it whichever symlinks lead there;
//! - its name starts with `<pv name>_`, the folder this provisioner makes for
//!   that PV ([`folder_name`]), so one PV cannot name another's data;
//! - it is a directory, not a symlink: a symlink is never followed, not even
//!   to remove what it points at.
//!
//! The removal then goes through the canonical path, and
//! [`std::fs::remove_dir_all`] does not follow symlinks found inside the
//! tree, so what a container left in the volume cannot redirect it either.
//!
//! Everything here blocks; callers run it on the blocking pool.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Mode of a volume's directory: anyone may write, as local-path's setup
/// script makes it, since the pods' users are not known in advance.
pub const VOLUME_DIR_MODE: u32 = 0o777;

/// Why a PV's path was not accepted for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The path is relative.
    NotAbsolute,
    /// The path has a `..` component.
    ParentComponent,
    /// The path is not a direct child of the storage directory.
    OutsideStorageDir,
    /// The path's name is not this PV's folder.
    OtherVolume,
    /// The path is a symlink.
    Symlink,
    /// The path is neither a directory nor a symlink.
    NotADirectory,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the path is not absolute",
            Self::ParentComponent => "the path contains '..'",
            Self::OutsideStorageDir => {
                "the path is not directly inside the provisioner's storage directory"
            }
            Self::OtherVolume => "the directory does not belong to this volume",
            Self::Symlink => "the path is a symbolic link",
            Self::NotADirectory => "the path is not a directory",
        })
    }
}

/// Why a volume's directory could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The path failed the safety checks; retrying will not help.
    #[error("refusing to delete {}: {refusal}", path.display())]
    Refused {
        /// The path from the PV.
        path: PathBuf,
        /// Which check failed.
        refusal: Refusal,
    },
    /// The filesystem failed; worth retrying.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_error(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> DirError {
    move |source| DirError::Io {
        context: context(),
        source,
    }
}

/// The folder of a volume inside the storage directory, named as
/// local-path names it: `<pv name>_<namespace>_<claim name>`.
pub fn folder_name(pv_name: &str, namespace: &str, claim_name: &str) -> String {
    format!("{pv_name}_{namespace}_{claim_name}")
}

/// Makes the directory `folder` in `storage_dir` (and `storage_dir` itself
/// if missing), with mode [`VOLUME_DIR_MODE`]. An existing directory is
/// reused, so a retried provisioning succeeds. Returns the path and whether
/// this call made it.
pub fn create_volume_dir(storage_dir: &Path, folder: &str) -> Result<(PathBuf, bool), DirError> {
    let mut components = Path::new(folder).components();
    if !matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err(DirError::Io {
            context: format!("making the volume directory {folder:?}"),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a single path component"),
        });
    }
    std::fs::create_dir_all(storage_dir).map_err(io_error(|| {
        format!("making the storage directory {}", storage_dir.display())
    }))?;
    let path = storage_dir.join(folder);
    let created = match std::fs::create_dir(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let metadata = std::fs::symlink_metadata(&path)
                .map_err(io_error(|| format!("inspecting {}", path.display())))?;
            if !metadata.is_dir() {
                return Err(DirError::Io {
                    context: format!("making the volume directory {}", path.display()),
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "something other than a directory is in the way",
                    ),
                });
            }
            false
        }
        Err(e) => return Err(io_error(|| format!("making {}", path.display()))(e)),
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(VOLUME_DIR_MODE)).map_err(
        io_error(|| format!("setting the mode of {}", path.display())),
    )?;
    Ok((path, created))
}

/// Removes `path` if it is an empty directory: undoes [`create_volume_dir`]
/// when the PV could not be saved, never touching data.
pub fn remove_if_empty(path: &Path) -> Result<(), DirError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(|| format!("removing {}", path.display()))(e)),
    }
}

/// The checks that need no filesystem: absolute, no `..`, named as this
/// PV's folder. Returns the parent to canonicalize and the folder name.
pub fn check_lexically<'a>(
    pv_name: &str,
    path: &'a Path,
) -> Result<(&'a Path, &'a OsStr), Refusal> {
    if !path.is_absolute() {
        return Err(Refusal::NotAbsolute);
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Refusal::ParentComponent);
    }
    let (Some(parent), Some(Component::Normal(name))) =
        (path.parent(), path.components().next_back())
    else {
        return Err(Refusal::OutsideStorageDir);
    };
    let prefix = format!("{pv_name}_");
    if !name.as_encoded_bytes().starts_with(prefix.as_bytes()) {
        return Err(Refusal::OtherVolume);
    }
    Ok((parent, name))
}

/// The directory to remove for the PV `pv_name` whose path is `path`, after
/// every check in the module docs: `Ok(None)` when it is already gone.
pub fn volume_dir_to_remove(
    storage_dir: &Path,
    pv_name: &str,
    path: &Path,
) -> Result<Option<PathBuf>, DirError> {
    let refused = |refusal| DirError::Refused {
        path: path.to_path_buf(),
        refusal,
    };
    let (parent, name) = check_lexically(pv_name, path).map_err(refused)?;
    let storage = std::fs::canonicalize(storage_dir).map_err(io_error(|| {
        format!("resolving the storage directory {}", storage_dir.display())
    }))?;
    let parent = match std::fs::canonicalize(parent) {
        Ok(parent) => parent,
        // A parent that does not exist is not the storage directory.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(refused(Refusal::OutsideStorageDir));
        }
        Err(e) => return Err(io_error(|| format!("resolving {}", parent.display()))(e)),
    };
    if parent != storage {
        return Err(refused(Refusal::OutsideStorageDir));
    }
    let target = storage.join(name);
    let metadata = match std::fs::symlink_metadata(&target) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(|| format!("inspecting {}", target.display()))(e)),
    };
    if metadata.file_type().is_symlink() {
        return Err(refused(Refusal::Symlink));
    }
    if !metadata.is_dir() {
        return Err(refused(Refusal::NotADirectory));
    }
    Ok(Some(target))
}

/// Removes the directory of the PV `pv_name` at `path` with everything in
/// it, if [`volume_dir_to_remove`] accepts it. Returns whether something was
/// removed (false: it was already gone).
pub fn remove_volume_dir(storage_dir: &Path, pv_name: &str, path: &Path) -> Result<bool, DirError> {
    let Some(target) = volume_dir_to_remove(storage_dir, pv_name, path)? else {
        return Ok(false);
    };
    match std::fs::remove_dir_all(&target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(|| format!("removing {}", target.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const PV: &str = "pvc-1111";

    /// A storage dir with this PV's folder holding a file, and a sibling
    /// directory outside the storage dir holding a file.
    struct Layout {
        _root: tempfile::TempDir,
        storage: PathBuf,
        volume: PathBuf,
        outside: PathBuf,
    }

    fn layout() -> Layout {
        let root = tempfile::tempdir().expect("tempdir");
        let storage = root.path().join("storage");
        let (volume, created) =
            create_volume_dir(&storage, &folder_name(PV, "ns", "data")).expect("create");
        assert!(created);
        std::fs::write(volume.join("file"), "data").expect("write");
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("precious"), "keep").expect("write");
        Layout {
            storage,
            volume,
            outside,
            _root: root,
        }
    }

    fn refusal(result: Result<bool, DirError>) -> Refusal {
        match result {
            Err(DirError::Refused { refusal, .. }) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn folder_names_follow_local_path() {
        assert_eq!(folder_name("pvc-1", "default", "www"), "pvc-1_default_www");
    }

    #[test]
    fn volume_dirs_are_world_writable_and_reused() {
        let l = layout();
        let mode = std::fs::metadata(&l.volume)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);
        let (again, created) =
            create_volume_dir(&l.storage, &folder_name(PV, "ns", "data")).expect("again");
        assert_eq!(again, l.volume);
        assert!(!created);
        assert!(l.volume.join("file").exists(), "reuse keeps the contents");
    }

    #[test]
    fn folders_must_be_one_component() {
        let root = tempfile::tempdir().expect("tempdir");
        for folder in ["../x", "a/b", "", "/abs"] {
            assert!(
                create_volume_dir(root.path(), folder).is_err(),
                "{folder:?} accepted"
            );
        }
    }

    #[test]
    fn a_file_in_the_way_is_not_a_volume_dir() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("pvc-1_a_b"), "").expect("write");
        assert!(matches!(
            create_volume_dir(root.path(), "pvc-1_a_b"),
            Err(DirError::Io { .. })
        ));
    }

    #[test]
    fn the_volume_dir_is_removed_with_its_contents() {
        let l = layout();
        assert!(remove_volume_dir(&l.storage, PV, &l.volume).expect("remove"));
        assert!(!l.volume.exists());
        assert!(l.storage.exists());
        // Removing again finds nothing, which is not an error.
        assert!(!remove_volume_dir(&l.storage, PV, &l.volume).expect("again"));
    }

    #[test]
    fn a_path_through_a_symlinked_storage_dir_is_accepted() {
        let l = layout();
        let alias = l.storage.parent().expect("parent").join("alias");
        symlink(&l.storage, &alias).expect("symlink");
        let via_alias = alias.join(l.volume.file_name().expect("name"));
        assert!(remove_volume_dir(&l.storage, PV, &via_alias).expect("remove"));
        assert!(!l.volume.exists());
    }

    #[test]
    fn paths_outside_the_storage_dir_are_refused() {
        let l = layout();
        let named_like_ours = l.outside.join(format!("{PV}_ns_data"));
        std::fs::create_dir(&named_like_ours).expect("mkdir");
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, &named_like_ours)),
            Refusal::OutsideStorageDir
        );
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, &l.outside)),
            Refusal::OtherVolume
        );
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, Path::new("/"))),
            Refusal::OutsideStorageDir
        );
        assert_eq!(
            refusal(remove_volume_dir(
                &l.storage,
                PV,
                Path::new("/nonexistent/pvc-1111_ns_data")
            )),
            Refusal::OutsideStorageDir
        );
        // Nested deeper inside the storage dir is not a direct child.
        let nested = l.volume.join(format!("{PV}_x_y"));
        std::fs::create_dir(&nested).expect("mkdir");
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, &nested)),
            Refusal::OutsideStorageDir
        );
        assert!(l.outside.join("precious").exists());
        assert!(named_like_ours.exists());
        assert!(nested.exists());
    }

    #[test]
    fn dot_dot_and_relative_paths_are_refused() {
        let l = layout();
        let escaping = l.storage.join("..").join("outside");
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, &escaping)),
            Refusal::ParentComponent
        );
        let sneaky = l
            .storage
            .join(format!("{PV}_ns_data"))
            .join("..")
            .join(format!("{PV}_ns_data"));
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, &sneaky)),
            Refusal::ParentComponent
        );
        assert_eq!(
            refusal(remove_volume_dir(
                &l.storage,
                PV,
                Path::new("storage/pvc-1111_ns_data")
            )),
            Refusal::NotAbsolute
        );
        assert!(l.outside.join("precious").exists());
        assert!(l.volume.join("file").exists());
    }

    #[test]
    fn another_volumes_directory_is_refused() {
        let l = layout();
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, "pvc-2222", &l.volume)),
            Refusal::OtherVolume
        );
        // A PV whose name is a prefix of another's does not match it either.
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, "pvc-111", &l.volume)),
            Refusal::OtherVolume
        );
        assert!(l.volume.join("file").exists());
    }

    #[test]
    fn symlinks_in_the_storage_dir_are_never_followed() {
        let l = layout();
        let planted = l.storage.join(format!("{PV}_ns_evil"));
        symlink(&l.outside, &planted).expect("symlink");
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, &planted)),
            Refusal::Symlink
        );
        assert!(l.outside.join("precious").exists());
        assert!(planted.exists(), "the symlink itself is left alone too");
    }

    #[test]
    fn symlinks_inside_a_volume_are_removed_not_followed() {
        let l = layout();
        symlink(&l.outside, l.volume.join("link")).expect("symlink");
        assert!(remove_volume_dir(&l.storage, PV, &l.volume).expect("remove"));
        assert!(!l.volume.exists());
        assert!(l.outside.join("precious").exists());
    }

    #[test]
    fn files_are_not_volume_dirs() {
        let l = layout();
        let file = l.storage.join(format!("{PV}_ns_file"));
        std::fs::write(&file, "x").expect("write");
        assert_eq!(
            refusal(remove_volume_dir(&l.storage, PV, &file)),
            Refusal::NotADirectory
        );
        assert!(file.exists());
    }

    #[test]
    fn only_empty_dirs_are_undone() {
        let l = layout();
        assert!(remove_if_empty(&l.volume).is_err());
        assert!(l.volume.join("file").exists());
        let (empty, _) = create_volume_dir(&l.storage, "pvc-3_a_b").expect("create");
        remove_if_empty(&empty).expect("remove");
        assert!(!empty.exists());
        remove_if_empty(&empty).expect("gone already");
    }
}
