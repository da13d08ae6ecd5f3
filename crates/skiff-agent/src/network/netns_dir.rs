//! `/run/netns` as a shared mount point of its own, before containerd
//! mounts pod network namespaces there.
//!
//! containerd bind-mounts each sandbox's network namespace onto a file in
//! `/run/netns`. The first `ip netns add` on the host then bind-mounts that
//! directory onto itself (recursively) and makes it shared, so every
//! namespace mounted before stands twice: once on top, once hidden under the
//! new mount. When the pod goes, containerd unmounts the one on top and
//! cannot unlink the file (`EBUSY`, it is still a mount point below), so the
//! sandbox is never removed and the pod never finishes deleting. Doing
//! iproute2's setup first, while no namespace is mounted there, makes its
//! later `ip netns add` find the mount point and leave it be.

use std::io;
use std::path::Path;

use rustix::mount::{MountPropagationFlags, mount_bind_recursive, mount_change};

use crate::volumes::mount::mount_points;

/// Where containerd (and iproute2) mount named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// What [`prepare`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preparation {
    /// The directory is already a mount point (of `ip netns` or an earlier
    /// start): nothing to do.
    AlreadyMountPoint,
    /// The directory was bind-mounted onto itself and made shared.
    Mounted,
    /// Namespaces are already mounted in the plain directory: binding it now
    /// would hide them, so it is left as it is.
    LeftAlone {
        /// How many namespaces are mounted there.
        mounted: usize,
    },
}

/// The decision, from a `/proc/self/mountinfo` table.
fn plan(mountinfo: &str, dir: &Path) -> Preparation {
    let mut mounted = 0;
    for point in mount_points(mountinfo) {
        if point == dir {
            return Preparation::AlreadyMountPoint;
        }
        if point.starts_with(dir) {
            mounted += 1;
        }
    }
    if mounted == 0 {
        Preparation::Mounted
    } else {
        Preparation::LeftAlone { mounted }
    }
}

/// Makes `dir` a shared mount point of its own unless it is one already or
/// namespaces are mounted in it.
pub fn prepare(dir: &Path) -> io::Result<Preparation> {
    std::fs::create_dir_all(dir)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let preparation = plan(&mountinfo, dir);
    if preparation == Preparation::Mounted {
        mount_bind_recursive(dir, dir)?;
        mount_change(
            dir,
            MountPropagationFlags::SHARED | MountPropagationFlags::REC,
        )?;
    }
    Ok(preparation)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n";

    #[test]
    fn a_plain_empty_directory_is_mounted() {
        assert_eq!(plan(ROOT, Path::new(NETNS_DIR)), Preparation::Mounted);
    }

    #[test]
    fn a_mount_point_is_left_as_it_is() {
        let table = format!(
            "{ROOT}81 27 254:0 /run/netns /run/netns rw shared:1 - ext4 /dev/vda rw\n\
             64 81 0:4 net:[4026532313] /run/netns/cni-3a rw shared:2 - nsfs nsfs rw\n"
        );
        assert_eq!(
            plan(&table, Path::new(NETNS_DIR)),
            Preparation::AlreadyMountPoint
        );
    }

    #[test]
    fn namespaces_in_a_plain_directory_are_not_hidden() {
        let table = format!(
            "{ROOT}74 27 0:4 net:[4026532248] /run/netns/cni-9a rw - nsfs nsfs rw\n\
             86 27 0:4 net:[4026532315] /run/netns/cni-34 rw - nsfs nsfs rw\n\
             90 27 0:50 / /run/netnsother rw - tmpfs tmpfs rw\n"
        );
        assert_eq!(
            plan(&table, Path::new(NETNS_DIR)),
            Preparation::LeftAlone { mounted: 2 }
        );
    }
}
