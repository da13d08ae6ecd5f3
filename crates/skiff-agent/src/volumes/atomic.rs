//! Atomic projection of a set of files into a volume directory.
//!
//! ConfigMap, Secret, downward API and projected volumes follow their sources:
//! every pod sync rewrites them, and a reader inside the container must never
//! see half an update. The layout is upstream's, which applications (and
//! inotify-based reloaders) rely on:
//!
//! ```text
//! <volume>/..2024_05_01_10_00_00.1234   the real files, one directory per version
//! <volume>/..data -> ..2024_05_01_10_00_00.1234
//! <volume>/app.conf -> ..data/app.conf  one symlink per top-level name
//! <volume>/conf.d -> ..data/conf.d
//! ```
//!
//! An update writes a new timestamped directory, points a fresh `..data_tmp`
//! link at it and renames that over `..data` (rename is atomic), then drops
//! the top-level links of names that disappeared and the old directory. An
//! unchanged payload writes nothing. Names starting with `..` are reserved for
//! this machinery, so payload paths may not start with them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The link that names the current version.
const DATA_DIR: &str = "..data";
/// The link renamed over [`DATA_DIR`] to switch versions.
const NEW_DATA_DIR: &str = "..data_tmp";
const MAX_FILE_NAME: usize = 255;
const MAX_PATH: usize = 4096;

/// One file of a projection: its bytes, written raw, its permission bits
/// and, for token files, its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's content.
    pub data: Vec<u8>,
    /// Permission bits (`0o644`, ...); only the low nine bits are used.
    pub mode: u32,
    /// The user owning the file (upstream's `FsUser`); `None` leaves it to
    /// the writer (root).
    pub owner: Option<u32>,
}

/// Files by their path relative to the volume (`key`, `dir/key`).
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a projection could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// A payload path is not a plain relative path inside the volume.
    #[error("invalid path: {reason}: {path:?}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`write`, `symlink`, ...).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError {
    move |source| AtomicWriteError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Projects `payload` into `target` (an existing directory). Returns whether
/// anything changed on disk. Not safe to call concurrently on one `target`;
/// the volume manager serialises calls per pod.
pub fn write(target: &Path, payload: &Payload) -> Result<bool, AtomicWriteError> {
    let payload = clean_payload(payload)?;
    let data_link = target.join(DATA_DIR);
    let old_version = current_version(&data_link)?;

    let mut stale_top_level = BTreeSet::new();
    if let Some(old) = &old_version {
        let old_dir = target.join(old);
        let existing = walk(&old_dir)?;
        let wanted = with_ancestors(payload.keys().map(String::as_str));
        if existing == wanted && !payload_differs(&old_dir, &payload)? {
            return Ok(false);
        }
        let wanted_top: BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
        stale_top_level = existing
            .iter()
            .map(|p| top_level(p))
            .filter(|top| !wanted_top.contains(top))
            .map(str::to_string)
            .collect();
    }

    let version = new_version_dir(target)?;
    let version_dir = target.join(&version);
    if let Err(e) = write_files(&version_dir, &payload) {
        let _ = fs::remove_dir_all(&version_dir);
        return Err(e);
    }

    for top in payload
        .keys()
        .map(|p| top_level(p))
        .collect::<BTreeSet<_>>()
    {
        let visible = target.join(top);
        match fs::symlink_metadata(&visible) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(top), &visible)
                    .map_err(io_err("symlink", &visible))?;
            }
            Err(e) => return Err(io_err("stat", &visible)(e)),
        }
    }

    let new_link = target.join(NEW_DATA_DIR);
    remove_if_symlink(&new_link)?;
    if let Err(e) = std::os::unix::fs::symlink(&version, &new_link) {
        let _ = fs::remove_dir_all(&version_dir);
        return Err(io_err("symlink", &new_link)(e));
    }
    if let Err(e) = fs::rename(&new_link, &data_link) {
        let _ = fs::remove_file(&new_link);
        let _ = fs::remove_dir_all(&version_dir);
        return Err(io_err("rename", &new_link)(e));
    }

    for top in &stale_top_level {
        remove_if_symlink(&target.join(top))?;
    }
    remove_old_versions(target, &version)?;
    Ok(true)
}

/// Validates every path and returns the payload keyed by cleaned paths
/// (`./a//b` → `a/b`).
fn clean_payload(payload: &Payload) -> Result<BTreeMap<String, &FileProjection>, AtomicWriteError> {
    payload
        .iter()
        .map(|(path, file)| Ok((clean_path(path)?, file)))
        .collect()
}

fn clean_path(path: &str) -> Result<String, AtomicWriteError> {
    let invalid = |reason| AtomicWriteError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("must be a relative path"));
    }
    if path.len() > MAX_PATH {
        return Err(invalid("must be at most 4096 characters"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("must not contain '..'")),
            _ if part.len() > MAX_FILE_NAME => {
                return Err(invalid("file names must be at most 255 characters"));
            }
            _ if part.contains('\0') => return Err(invalid("must not contain NUL")),
            _ => parts.push(part),
        }
    }
    match parts.first() {
        None => Err(invalid("must name a file")),
        Some(first) if first.starts_with("..") => Err(invalid("must not start with '..'")),
        Some(_) => Ok(parts.join("/")),
    }
}

fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// The version `..data` points at, if it is one of ours (a `..` name in the
/// volume directory); anything else is ignored and replaced.
fn current_version(data_link: &Path) -> Result<Option<PathBuf>, AtomicWriteError> {
    match fs::read_link(data_link) {
        Ok(target) => {
            let mut components = target.components();
            let ours = matches!(
                (components.next(), components.next()),
                (Some(Component::Normal(name)), None)
                    if name.to_string_lossy().starts_with("..")
            );
            Ok(ours.then_some(target))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // `..data` exists but is not a link: not our layout; it gets replaced.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(None),
        Err(e) => Err(io_err("readlink", data_link)(e)),
    }
}

/// Every file and directory under `dir`, relative to it, without following
/// symlinks.
fn walk(dir: &Path) -> Result<BTreeSet<String>, AtomicWriteError> {
    fn visit(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> Result<(), AtomicWriteError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("readdir", dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("readdir", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let file_type = entry.file_type().map_err(io_err("stat", &entry.path()))?;
            if file_type.is_dir() {
                visit(&entry.path(), &relative, out)?;
            }
            out.insert(relative);
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    visit(dir, "", &mut out)?;
    Ok(out)
}

/// The payload's paths plus every directory above them.
fn with_ancestors<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for path in paths {
        let mut end = path.len();
        loop {
            out.insert(path[..end].to_string());
            match path[..end].rfind('/') {
                Some(slash) => end = slash,
                None => break,
            }
        }
    }
    out
}

fn payload_differs(
    old_dir: &Path,
    payload: &BTreeMap<String, &FileProjection>,
) -> Result<bool, AtomicWriteError> {
    for (path, file) in payload {
        let full = old_dir.join(path);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_err("stat", &full)(e)),
        };
        if !meta.is_file()
            || meta.len() != file.data.len() as u64
            || meta.permissions().mode() & 0o777 != file.mode & 0o777
            || file.owner.is_some_and(|uid| uid != meta.uid())
        {
            return Ok(true);
        }
        if fs::read(&full).map_err(io_err("read", &full))? != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Creates `..<UTC timestamp>.<unique>` in `target`, mode 0755 so that any
/// container user can traverse it.
fn new_version_dir(target: &Path) -> Result<String, AtomicWriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("..%Y_%m_%d_%H_%M_%S");
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{stamp}.{}{n}", now.subsec_nanosecond());
        let dir = target.join(&name);
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &dir))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("mkdir", &dir)(e)),
        }
    }
}

fn write_files(
    dir: &Path,
    payload: &BTreeMap<String, &FileProjection>,
) -> Result<(), AtomicWriteError> {
    for (path, file) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_err("mkdir", parent))?;
        }
        let mode = file.mode & 0o777;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&full)
            .map_err(io_err("create", &full))?;
        out.write_all(&file.data).map_err(io_err("write", &full))?;
        // The umask may have cleared bits the pod asked for.
        fs::set_permissions(&full, fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &full))?;
        if let Some(uid) = file.owner {
            std::os::unix::fs::lchown(&full, Some(uid), None).map_err(io_err("chown", &full))?;
        }
    }
    Ok(())
}

fn remove_if_symlink(path: &Path) -> Result<(), AtomicWriteError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::remove_file(path).map_err(io_err("remove", path))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Removes every version directory but `keep`: the one just replaced, and
/// any left behind by an interrupted write.
fn remove_old_versions(target: &Path, keep: &str) -> Result<(), AtomicWriteError> {
    for entry in fs::read_dir(target).map_err(io_err("readdir", target))? {
        let entry = entry.map_err(io_err("readdir", target))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("..") || name == DATA_DIR || name == keep {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_err("stat", &path))?;
        if file_type.is_dir() {
            fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
        } else if file_type.is_symlink() {
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
            owner: None,
        }
    }

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(path, data)| (path.to_string(), file(data, 0o644)))
            .collect()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn lays_files_out_behind_data_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let changed = write(dir.path(), &payload(&[("a", "1"), ("sub/b", "2")])).expect("write");
        assert!(changed);

        assert_eq!(fs::read_to_string(dir.path().join("a")).expect("a"), "1");
        assert_eq!(
            fs::read_to_string(dir.path().join("sub/b")).expect("b"),
            "2"
        );
        assert_eq!(
            fs::read_link(dir.path().join("a")).expect("link"),
            Path::new("..data/a")
        );
        assert_eq!(
            fs::read_link(dir.path().join("sub")).expect("link"),
            Path::new("..data/sub")
        );
        let version = fs::read_link(dir.path().join("..data")).expect("data link");
        let version = version.to_string_lossy();
        assert!(version.starts_with("..") && version.len() > "..2024_01_01_00_00_00.".len());
        let on_disk = names(dir.path());
        assert_eq!(on_disk.len(), 4, "{on_disk:?}");
        let mode = fs::metadata(dir.path().join(&*version))
            .expect("version")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn unchanged_payload_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = payload(&[("a", "1"), ("sub/b", "2")]);
        assert!(write(dir.path(), &files).expect("first"));
        let before = fs::read_link(dir.path().join("..data")).expect("link");
        assert!(!write(dir.path(), &files).expect("second"));
        assert_eq!(
            fs::read_link(dir.path().join("..data")).expect("link"),
            before
        );
    }

    #[test]
    fn update_replaces_content_and_drops_removed_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            &payload(&[("a", "1"), ("gone", "x"), ("sub/b", "2")]),
        )
        .expect("first");
        let old = fs::read_link(dir.path().join("..data")).expect("link");

        assert!(write(dir.path(), &payload(&[("a", "new"), ("sub/b", "2")])).expect("second"));
        assert_eq!(fs::read_to_string(dir.path().join("a")).expect("a"), "new");
        assert!(fs::symlink_metadata(dir.path().join("gone")).is_err());
        assert!(!dir.path().join(&old).exists(), "old version removed");
        let expected: BTreeSet<String> = ["a", "sub", "..data"].map(String::from).into();
        let mut on_disk = names(dir.path());
        on_disk.retain(|n| !n.starts_with("..") || n == "..data");
        assert_eq!(on_disk, expected);
        assert_eq!(names(dir.path()).len(), 4, "one version directory left");
    }

    #[test]
    fn mode_change_alone_is_an_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = payload(&[("a", "1")]);
        write(dir.path(), &files).expect("first");
        files.insert("a".into(), file("1", 0o400));
        assert!(write(dir.path(), &files).expect("second"));
        let mode = fs::metadata(dir.path().join("a"))
            .expect("a")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }

    #[test]
    fn binary_data_is_written_raw() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = vec![0u8, 255, 10, 13, 128];
        let files = Payload::from([(
            "bin".to_string(),
            FileProjection {
                data: bytes.clone(),
                mode: 0o600,
                owner: None,
            },
        )]);
        write(dir.path(), &files).expect("write");
        assert_eq!(fs::read(dir.path().join("bin")).expect("read"), bytes);
    }

    #[test]
    fn rejects_paths_that_leave_the_volume() {
        for bad in [
            "/etc/passwd",
            "a/../../b",
            "..",
            "..data/x",
            "..x",
            "",
            "./",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let err = write(dir.path(), &payload(&[(bad, "x")])).expect_err(bad);
            assert!(
                matches!(err, AtomicWriteError::InvalidPath { .. }),
                "{bad}: {err}"
            );
            assert_eq!(names(dir.path()).len(), 0, "{bad}: nothing written");
        }
        assert_eq!(clean_path("./a//b/").expect("clean"), "a/b");
    }

    #[test]
    fn leftovers_of_an_interrupted_write_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("..2020_01_01_00_00_00.1")).expect("stale dir");
        std::os::unix::fs::symlink("..2020_01_01_00_00_00.1", dir.path().join(NEW_DATA_DIR))
            .expect("stale link");
        write(dir.path(), &payload(&[("a", "1")])).expect("write");
        let on_disk = names(dir.path());
        assert_eq!(on_disk.len(), 3, "{on_disk:?}");
        assert!(!on_disk.contains("..2020_01_01_00_00_00.1"));
    }
}
