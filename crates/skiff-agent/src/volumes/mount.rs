//! The kernel calls the volume manager makes, behind a trait.
//!
//! Only `emptyDir` with `medium: Memory` and the tmpfs that backs secret and
//! projected volumes need the kernel; everything else is plain file IO. The
//! trait keeps those few calls out of the volume logic so that it can be
//! tested as any user, with [`FakeMounter`] recording what would have been
//! mounted.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Mounts and unmounts the tmpfs file systems of memory-backed volumes.
pub trait Mounter: Send + Sync {
    /// Mounts a fresh tmpfs on `target` (an existing directory), limited to
    /// `size_bytes` if given (the kernel's default, half of RAM, otherwise).
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> io::Result<()>;

    /// Unmounts whatever is mounted on `target`.
    fn unmount(&self, target: &Path) -> io::Result<()>;

    /// Whether `path` is the root of a mount (a symlink never is: it is not
    /// followed).
    fn is_mount_point(&self, path: &Path) -> io::Result<bool>;

    /// Every mount point at or below `dir` (nested ones too, such as a mount
    /// a container propagated back), so that a pod directory is never
    /// deleted through a mount.
    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real [`Mounter`]: `mount(2)`, `umount(2)` and `statx(2)` through
/// rustix's safe wrappers. Needs `CAP_SYS_ADMIN` for mounting.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxMounter;

impl Mounter for LinuxMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> io::Result<()> {
        let data = size_bytes
            .map(|size| CString::new(format!("size={size}")))
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        rustix::mount::mount(
            "tmpfs",
            target,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            data.as_deref(),
        )?;
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty())?;
        Ok(())
    }

    fn is_mount_point(&self, path: &Path) -> io::Result<bool> {
        use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};

        let stat = rustix::fs::statx(
            CWD,
            path,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        )?;
        if stat
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
        {
            return Ok(stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
        }
        // Kernels before 5.8 do not report mount roots: a different device
        // than the parent's is the classic test. It misses bind mounts from
        // the same file system, which this manager never makes.
        let Some(parent) = path.parent() else {
            return Ok(true);
        };
        let parent = rustix::fs::statx(CWD, parent, AtFlags::empty(), StatxFlags::BASIC_STATS)?;
        Ok(
            (stat.stx_dev_major, stat.stx_dev_minor)
                != (parent.stx_dev_major, parent.stx_dev_minor),
        )
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        // The kernel lists mounts by their real path.
        let dir = match dir.canonicalize() {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let table = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(mount_points(&table)
            .filter(|m| m.starts_with(&dir))
            .collect())
    }
}

/// The mount points of a `/proc/self/mountinfo` table: the fifth field of
/// each line, with the kernel's octal escapes (`\040` for a space) undone.
pub(crate) fn mount_points(table: &str) -> impl Iterator<Item = PathBuf> + '_ {
    use std::os::unix::ffi::OsStringExt;

    table.lines().filter_map(|line| {
        let field = line.split(' ').nth(4)?;
        let raw = field.as_bytes();
        let mut bytes = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let escaped = raw
                .get(i + 1..i + 4)
                .filter(|_| raw[i] == b'\\')
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            match escaped {
                Some(byte) => {
                    bytes.push(byte);
                    i += 4;
                }
                None => {
                    bytes.push(raw[i]);
                    i += 1;
                }
            }
        }
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    })
}

/// One call made on a [`FakeMounter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    /// `mount_tmpfs(target, size_bytes)`.
    MountTmpfs(PathBuf, Option<u64>),
    /// `unmount(target)`.
    Unmount(PathBuf),
}

/// A [`Mounter`] that mounts nothing: it records calls and remembers which
/// paths are "mounted", so tests can check idempotence and cleanup.
#[derive(Debug, Default)]
pub struct FakeMounter {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<MountCall>,
    mounted: BTreeSet<PathBuf>,
}

impl FakeMounter {
    /// A fake with nothing mounted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<MountCall> {
        self.lock().calls.clone()
    }

    /// The paths currently "mounted".
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.lock().mounted.iter().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panic in another test thread must not hide this fake's state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> io::Result<()> {
        if !target.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let mut state = self.lock();
        state
            .calls
            .push(MountCall::MountTmpfs(target.to_path_buf(), size_bytes));
        state.mounted.insert(target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.calls.push(MountCall::Unmount(target.to_path_buf()));
        if state.mounted.remove(target) {
            Ok(())
        } else {
            // What umount(2) says for a path that is not a mount point.
            Err(io::Error::from(io::ErrorKind::InvalidInput))
        }
    }

    fn is_mount_point(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock().mounted.contains(path))
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.lock();
        Ok(state
            .mounted
            .iter()
            .filter(|m| m.starts_with(dir))
            .cloned()
            .collect())
    }
}
