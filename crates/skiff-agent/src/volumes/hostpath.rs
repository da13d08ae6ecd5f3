//! `hostPath` volumes: a path on the node, checked against the declared type.
//!
//! The checks and their messages are upstream's (they surface in FailedMount
//! events): the `...OrCreate` types create what is missing, the others
//! require the path to exist with the right type, and an empty type checks
//! nothing. Types are judged after following symlinks, as upstream's `stat`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Checks (and for the `...OrCreate` types, creates) `path` per `path_type`.
/// The error is the user-facing message.
pub fn check(path: &str, path_type: &str) -> Result<(), String> {
    if path.split('/').any(|part| part == "..") {
        return Err(format!("invalid HostPath `{path}`: must not contain '..'"));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "invalid HostPath `{path}`: must be an absolute path"
        ));
    }
    let p = Path::new(path);
    match path_type {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if !exists(p) {
                return fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(p)
                    .map_err(|e| format!("mkdir {path}: {e}"));
            }
            expect(p, Kind::Directory)
        }
        "Directory" => expect(p, Kind::Directory),
        "FileOrCreate" => {
            if !exists(p) {
                return match fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(p)
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(format!("open {path}: {e}")),
                };
            }
            expect(p, Kind::File)
        }
        "File" => expect(p, Kind::File),
        "Socket" => expect(p, Kind::Socket),
        "CharDevice" => expect(p, Kind::CharDevice),
        "BlockDevice" => expect(p, Kind::BlockDevice),
        other => Err(format!("{other} is an invalid volume type")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// The name upstream reports a found type by.
    fn type_name(self) -> &'static str {
        match self {
            Kind::Directory => "Directory",
            Kind::File => "File",
            Kind::Socket => "Socket",
            Kind::CharDevice => "CharDevice",
            Kind::BlockDevice => "BlockDevice",
        }
    }

    /// The phrase upstream expects a type by.
    fn description(self) -> &'static str {
        match self {
            Kind::Directory => "directory",
            Kind::File => "file",
            Kind::Socket => "socket file",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
        }
    }
}

fn exists(path: &Path) -> bool {
    fs::metadata(path).is_ok()
}

fn expect(path: &Path, want: Kind) -> Result<(), String> {
    let shown = path.display();
    let meta = fs::metadata(path).map_err(|_| format!("hostPath {shown} doesn't exist"))?;
    let file_type = meta.file_type();
    let found = if file_type.is_dir() {
        Kind::Directory
    } else if file_type.is_file() {
        Kind::File
    } else if file_type.is_socket() {
        Kind::Socket
    } else if file_type.is_char_device() {
        Kind::CharDevice
    } else if file_type.is_block_device() {
        Kind::BlockDevice
    } else {
        return Err(format!(
            "hostPath type check failed, {shown} is not a {}, unable to determine its type: \
             only recognise file, directory, socket, block device and character device",
            want.description()
        ));
    };
    if found != want {
        return Err(format!(
            "hostPath type check failed: {shown} is not a {}, it's a {}",
            want.description(),
            found.type_name()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_create_types_create_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new_dir = dir.path().join("a/b");
        let new_dir = new_dir.to_str().expect("utf-8");
        check(new_dir, "DirectoryOrCreate").expect("create dir");
        assert!(Path::new(new_dir).is_dir());
        check(new_dir, "DirectoryOrCreate").expect("idempotent");

        let new_file = dir.path().join("f");
        let new_file = new_file.to_str().expect("utf-8");
        check(new_file, "FileOrCreate").expect("create file");
        assert!(Path::new(new_file).is_file());
        check(new_file, "File").expect("now a file");
    }

    #[test]
    fn strict_types_report_upstream_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf-8");
        let missing = format!("{d}/missing");

        assert_eq!(
            check(&missing, "Directory"),
            Err(format!("hostPath {missing} doesn't exist"))
        );
        assert_eq!(
            check(d, "File"),
            Err(format!(
                "hostPath type check failed: {d} is not a file, it's a Directory"
            ))
        );
        assert_eq!(
            check(d, "Socket"),
            Err(format!(
                "hostPath type check failed: {d} is not a socket file, it's a Directory"
            ))
        );
        assert_eq!(
            check("/dev/null", "BlockDevice"),
            Err(
                "hostPath type check failed: /dev/null is not a block device, it's a CharDevice"
                    .into()
            )
        );
        check("/dev/null", "CharDevice").expect("char device");
        check(d, "Directory").expect("directory");
        assert_eq!(check(&missing, ""), Ok(()), "no type, no check");
        assert_eq!(
            check(d, "Fifo"),
            Err("Fifo is an invalid volume type".into())
        );
    }

    #[test]
    fn file_or_create_on_a_directory_is_a_type_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf-8");
        assert!(check(d, "FileOrCreate").is_err_and(|e| e.contains("is not a file")));
    }

    #[test]
    fn backsteps_and_relative_paths_are_refused() {
        assert!(check("/var/../etc", "").is_err_and(|e| e.contains("must not contain '..'")));
        assert!(check("var/log", "").is_err_and(|e| e.contains("absolute")));
    }
}
