//! Volume ownership for a pod's `fsGroup`, by upstream's rules
//! (`SetVolumeOwnership` in `pkg/volume/volume_linux.go`).
//!
//! Every entry of the volume gets the `fsGroup` as its group (symlinks
//! themselves, never their targets) and gains group permissions: read and
//! write, or only read for a read-only volume; directories also gain group
//! search and the setgid bit, so that whatever a container creates later
//! belongs to the group too. Permission bits are only ever added, and
//! symlinks are never chmod-ed (that would change their targets).
//!
//! The walk visits children before their directory, so the root is changed
//! last: a root that already matches means an earlier walk finished.
//! [`root_matches`] is that check (upstream's `OnRootMismatch` test), which
//! the volume manager uses to skip walks on resyncs.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Group bits a writable volume's entries gain.
const GROUP_RW: u32 = 0o060;
/// Group bits a read-only volume's entries gain.
const GROUP_RO: u32 = 0o040;
/// Search bits (owner and group) directories gain.
const DIR_SEARCH: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// The mode bits `fsGroup` adds to a file (upstream's `rwMask`/`roMask`,
/// which also touch the owner bits).
pub(super) fn file_bits(read_only: bool) -> u32 {
    let group = if read_only { GROUP_RO } else { GROUP_RW };
    group | group << 3
}

/// The mode bits `fsGroup` adds to a directory.
pub(super) fn dir_bits(read_only: bool) -> u32 {
    file_bits(read_only) | DIR_SEARCH | SETGID
}

/// Gives everything under `root` (and `root`) the group `gid` and the bits
/// of [`file_bits`]/[`dir_bits`]. Entries that disappear during the walk (a
/// container deleting files) are skipped; any other error stops it.
pub(super) fn apply(root: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    let meta = fs::symlink_metadata(root)?;
    visit(root, &meta, gid, read_only)
}

fn visit(path: &Path, meta: &fs::Metadata, gid: u32, read_only: bool) -> io::Result<()> {
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let child = entry.path();
            match fs::symlink_metadata(&child) {
                Ok(child_meta) => visit(&child, &child_meta, gid, read_only)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    skip_vanished(std::os::unix::fs::lchown(path, None, Some(gid)))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let bits = if meta.is_dir() {
        dir_bits(read_only)
    } else {
        file_bits(read_only)
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode | bits != mode {
        skip_vanished(fs::set_permissions(
            path,
            fs::Permissions::from_mode(mode | bits),
        ))?;
    }
    Ok(())
}

fn skip_vanished(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `root` is a directory with group `gid` and at least the bits of
/// [`dir_bits`]: upstream's test for skipping the walk.
pub(super) fn root_matches(root: &Path, gid: u32, read_only: bool) -> io::Result<bool> {
    let meta = fs::metadata(root)?;
    let bits = dir_bits(read_only);
    Ok(meta.is_dir() && meta.gid() == gid && meta.mode() & bits == bits)
}

/// A group tests may give files: any as root, else the test's own.
#[cfg(test)]
pub(super) fn test_gid() -> u32 {
    if rustix::process::geteuid().is_root() {
        4321
    } else {
        rustix::process::getegid().as_raw()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn stat(path: &Path) -> (u32, u32, u32) {
        let meta = fs::symlink_metadata(path).expect("stat");
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_writable_volume_gets_the_group_rw_and_setgid_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("vol");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::write(root.join("sub/data"), b"x").expect("write");
        fs::write(root.join("private"), b"x").expect("write");
        fs::write(dir.path().join("outside"), b"x").expect("write");
        chmod(&root, 0o777);
        chmod(&root.join("sub"), 0o700);
        chmod(&root.join("sub/data"), 0o600);
        chmod(&root.join("private"), 0o400);
        chmod(&dir.path().join("outside"), 0o600);
        symlink("../outside", root.join("link")).expect("symlink");
        let uid_before = stat(&root.join("sub/data")).0;
        let gid = test_gid();
        assert!(
            !root_matches(&root, gid, false).expect("check"),
            "no setgid yet"
        );

        apply(&root, gid, false).expect("apply");

        assert_eq!(stat(&root), (uid_before, gid, 0o2777));
        assert_eq!(stat(&root.join("sub")), (uid_before, gid, 0o2770));
        assert_eq!(stat(&root.join("sub/data")), (uid_before, gid, 0o660));
        assert_eq!(stat(&root.join("private")), (uid_before, gid, 0o660));
        // The link itself changes group; its target, outside, is untouched.
        assert_eq!(stat(&root.join("link")).1, gid);
        assert_eq!(stat(&dir.path().join("outside")).2, 0o600);
        assert!(root_matches(&root, gid, false).expect("check"));

        // Files created later in a setgid directory get the group.
        fs::write(root.join("sub/new"), b"x").expect("write");
        assert_eq!(stat(&root.join("sub/new")).1, gid);
    }

    #[test]
    fn a_read_only_volume_gets_group_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("vol");
        fs::create_dir_all(root.join("..data")).expect("mkdir");
        fs::write(root.join("..data/key"), b"secret").expect("write");
        chmod(&root.join("..data"), 0o755);
        chmod(&root.join("..data/key"), 0o400);
        let gid = test_gid();

        apply(&root, gid, true).expect("apply");

        assert_eq!(stat(&root.join("..data")).1, gid);
        assert_eq!(stat(&root.join("..data")).2, 0o2755);
        assert_eq!(stat(&root.join("..data/key")).2, 0o440);
        assert!(root_matches(&root, gid, true).expect("check"));
        // Read-only bits do not satisfy a writable volume.
        chmod(&root, 0o2555);
        assert!(!root_matches(&root, gid, false).expect("check"));
    }

    #[test]
    fn the_root_check_wants_group_bits_and_setgid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gid = stat(dir.path()).1;
        chmod(dir.path(), 0o777);
        assert!(!root_matches(dir.path(), gid, false).expect("no setgid"));
        chmod(dir.path(), 0o2707);
        assert!(!root_matches(dir.path(), gid, false).expect("no group bits"));
        chmod(dir.path(), 0o2770);
        assert!(root_matches(dir.path(), gid, false).expect("matches"));
        assert!(!root_matches(dir.path(), gid.wrapping_add(1), false).expect("other group"));
    }

    #[test]
    fn bits_are_upstreams_masks() {
        assert_eq!(file_bits(false), 0o660);
        assert_eq!(file_bits(true), 0o440);
        assert_eq!(dir_bits(false), 0o2770);
        assert_eq!(dir_bits(true), 0o2550);
    }
}
