//! Airgap images: OCI image-layout tarballs built from host binaries.
//!
//! Every pod needs a sandbox (pause) image, and the tests need an image with a
//! shell and small servers. Neither may depend on a registry, so the agent
//! builds both locally:
//!
//! - the pause image holds one static binary compiled from `pause/pause.c`
//!   (embedded in this crate) with the host's C compiler;
//! - the busybox image holds Debian's static `/bin/busybox` plus one symlink
//!   per applet, so `sh`, `httpd`, `nc`, `wget` and friends all work.
//!
//! Each image is written as an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) packed in a tar, which `ctr images import` and containerd's
//! import API accept. The image name travels in the index annotation
//! `io.containerd.image.name`.
//!
//! Output is deterministic: entries are sorted, owners are root and every
//! timestamp is the Unix epoch, so the same inputs always give the same
//! digests, and re-importing an unchanged image is a no-op for containerd.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Name of the locally built pause image; the containerd config points
/// `sandbox_image` at it.
pub const PAUSE_IMAGE: &str = "docker.io/skiff/pause:3.10";

/// Name of the locally built busybox test/demo image.
pub const BUSYBOX_IMAGE: &str = "docker.io/skiff/busybox:1.35";

const PAUSE_SOURCE: &str = include_str!("../pause/pause.c");

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors from building images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The C compiler for the pause binary is not installed.
    #[error(
        "C compiler `{}` not found, needed to build the pause image; run scripts/setup.sh (gcc, libc6-dev)",
        cc.display()
    )]
    CompilerMissing {
        /// The compiler that was tried.
        cc: PathBuf,
    },
    /// The C compiler ran but failed (for example, no static libc).
    #[error("compiling the pause binary with `{}` failed: {stderr}", cc.display())]
    CompileFailed {
        /// The compiler that was run.
        cc: PathBuf,
        /// What the compiler printed.
        stderr: String,
    },
    /// The busybox binary is not installed.
    #[error(
        "busybox `{}` not found, needed for the busybox image; run scripts/setup.sh (busybox-static)",
        path.display()
    )]
    BusyboxMissing {
        /// The busybox binary that was tried.
        path: PathBuf,
    },
    /// `busybox --list` failed or printed something unusable.
    #[error("listing the applets of `{}` failed: {detail}", path.display())]
    BusyboxList {
        /// The busybox binary that was run.
        path: PathBuf,
        /// Why the listing was rejected.
        detail: String,
    },
    /// A rootfs path was not a clean relative path.
    #[error("invalid rootfs path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io {
            context: context.into(),
            source,
        }
    }
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// One entry of a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// An in-memory root filesystem, packed into a single image layer.
///
/// Paths are relative to `/` (a leading `/` is accepted and dropped). Adding an
/// entry creates its missing parent directories with mode `0755`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rootfs {
    nodes: BTreeMap<String, Node>,
}

impl Rootfs {
    /// An empty root filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory, or changes the mode of an existing one.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        self.nodes.insert(path, Node::Dir { mode });
        Ok(self)
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        let data = data.into();
        self.nodes.insert(path, Node::File { mode, data });
        Ok(self)
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let path = self.prepare(path)?;
        let target = target.to_owned();
        self.nodes.insert(path, Node::Symlink { target });
        Ok(self)
    }

    /// Validates `path`, creates its parents, and returns its normalized form.
    fn prepare(&mut self, path: &str) -> Result<String> {
        let invalid = |reason| ImageError::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        if trimmed.is_empty() {
            return Err(invalid("the root itself cannot be an entry"));
        }
        let mut parent = String::new();
        let mut components = trimmed.split('/').peekable();
        while let Some(component) = components.next() {
            match component {
                "" => return Err(invalid("empty path component")),
                "." | ".." => return Err(invalid("`.` and `..` are not allowed")),
                _ => {}
            }
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            if components.peek().is_some() {
                match self.nodes.get(&parent) {
                    None => {
                        self.nodes.insert(parent.clone(), Node::Dir { mode: 0o755 });
                    }
                    Some(Node::Dir { .. }) => {}
                    Some(_) => return Err(invalid("a parent is not a directory")),
                }
            }
        }
        Ok(parent)
    }

    /// Packs the filesystem as an uncompressed tar, parents before children.
    fn to_tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        // Sorted keys put every directory before its contents, because a
        // path is a strict prefix of its children's paths.
        for (path, node) in &self.nodes {
            append(&mut builder, path, node)
                .map_err(ImageError::io(format!("packing rootfs entry {path}")))?;
        }
        builder
            .into_inner()
            .map_err(ImageError::io("finishing rootfs tar"))
    }
}

/// Appends one entry with a fully determined header (owner root, epoch mtime).
fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, node: &Node) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    match node {
        Node::Dir { mode } => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode);
            header.set_size(0);
            builder.append_data(&mut header, format!("{path}/"), io::empty())
        }
        Node::File { mode, data } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, data.as_slice())
        }
        Node::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, path, target)
        }
    }
}

/// What an image runs and with what environment (the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`: the command, before `Cmd` or the pod's `args`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: default arguments, replaced by the pod's `args`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`; empty means `/`.
    pub working_dir: String,
}

/// A single-layer image ready to be packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Full reference, e.g. `docker.io/skiff/pause:3.10`.
    pub name: String,
    /// The image's only layer.
    pub rootfs: Rootfs,
    /// Runtime defaults.
    pub config: ImageConfig,
}

/// A packed OCI image-layout tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciArchive {
    /// Image reference, as annotated in `index.json`.
    pub name: String,
    /// Digest of the image manifest (`sha256:…`), the image's identity.
    pub manifest_digest: String,
    /// The tarball.
    pub bytes: Vec<u8>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct Platform {
    architecture: &'static str,
    os: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
struct ConfigFile<'a> {
    architecture: &'static str,
    os: &'static str,
    config: RuntimeConfig<'a>,
    rootfs: RootfsConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    cmd: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    working_dir: &'a str,
}

#[derive(Serialize)]
struct RootfsConfig {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The host's architecture in OCI (Go) spelling: the images hold host binaries.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| ImageError::Io {
        context: "serializing OCI JSON".to_owned(),
        source: e.into(),
    })
}

/// Packs `spec` as an OCI image-layout tarball.
pub fn oci_archive(spec: &ImageSpec) -> Result<OciArchive> {
    let layer_tar = spec.rootfs.to_tar()?;
    let diff_id = sha256(&layer_tar);
    // The gzip header carries no name and a zero mtime, so it is reproducible.
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&layer_tar)
        .map_err(ImageError::io("compressing layer"))?;
    let layer = gz.finish().map_err(ImageError::io("compressing layer"))?;

    let config = to_json(&ConfigFile {
        architecture: oci_architecture(),
        os: "linux",
        config: RuntimeConfig {
            env: &spec.config.env,
            entrypoint: &spec.config.entrypoint,
            cmd: &spec.config.cmd,
            working_dir: &spec.config.working_dir,
        },
        rootfs: RootfsConfig {
            kind: "layers",
            diff_ids: vec![diff_id],
        },
    })?;
    let manifest = to_json(&Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST,
        config: Descriptor {
            media_type: MEDIA_CONFIG,
            digest: sha256(&config),
            size: config.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: MEDIA_LAYER_GZIP,
            digest: sha256(&layer),
            size: layer.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }],
    })?;
    let manifest_digest = sha256(&manifest);
    let tag = spec
        .name
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag);
    let index = to_json(&Index {
        schema_version: 2,
        media_type: MEDIA_INDEX,
        manifests: vec![Descriptor {
            media_type: MEDIA_MANIFEST,
            digest: manifest_digest.clone(),
            size: manifest.len() as u64,
            platform: Some(Platform {
                architecture: oci_architecture(),
                os: "linux",
            }),
            annotations: BTreeMap::from([
                (ANNOTATION_IMAGE_NAME, spec.name.as_str()),
                (ANNOTATION_REF_NAME, tag),
            ]),
        }],
    })?;

    let mut layout = Rootfs::new();
    layout.file("oci-layout", 0o644, r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    layout.file("index.json", 0o644, index)?;
    for blob in [config, manifest, layer] {
        let digest = sha256(&blob);
        let hex = digest.trim_start_matches("sha256:");
        layout.file(&format!("blobs/sha256/{hex}"), 0o644, blob)?;
    }
    Ok(OciArchive {
        name: spec.name.clone(),
        manifest_digest,
        bytes: layout.to_tar()?,
    })
}

/// Host programs the images are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTools {
    /// C compiler that can link statically (`gcc` with `libc6-dev`).
    pub cc: PathBuf,
    /// A statically linked busybox (Debian `busybox-static` installs `/bin/busybox`).
    pub busybox: PathBuf,
}

impl Default for HostTools {
    fn default() -> Self {
        Self {
            cc: PathBuf::from("gcc"),
            busybox: PathBuf::from("/bin/busybox"),
        }
    }
}

/// Compiles the pause binary statically; `scratch` holds the output briefly.
pub fn build_pause_binary(cc: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let out = scratch.join(format!(".skiff-pause-{}", std::process::id()));
    let mut child = Command::new(cc)
        .args(["-static", "-Os", "-s", "-x", "c", "-o"])
        .arg(&out)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::CompilerMissing { cc: cc.to_owned() },
            _ => ImageError::Io {
                context: format!("running {}", cc.display()),
                source: e,
            },
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(PAUSE_SOURCE.as_bytes())
            .map_err(ImageError::io("feeding pause.c to the compiler"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(ImageError::io(format!("waiting for {}", cc.display())))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&out);
        return Err(ImageError::CompileFailed {
            cc: cc.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let binary = std::fs::read(&out).map_err(ImageError::io(format!("reading {}", out.display())));
    let _ = std::fs::remove_file(&out);
    binary
}

/// The pause image: `/pause` and nothing else.
pub fn pause_image(cc: &Path, scratch: &Path) -> Result<ImageSpec> {
    let mut rootfs = Rootfs::new();
    rootfs.file("pause", 0o755, build_pause_binary(cc, scratch)?)?;
    Ok(ImageSpec {
        name: PAUSE_IMAGE.to_owned(),
        rootfs,
        config: ImageConfig {
            entrypoint: vec!["/pause".to_owned()],
            env: vec![PATH_ENV.to_owned()],
            ..ImageConfig::default()
        },
    })
}

/// The busybox image: busybox, its applets in `/bin`, users, and a `/tmp`.
pub fn busybox_image(busybox: &Path) -> Result<ImageSpec> {
    let binary = std::fs::read(busybox).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::BusyboxMissing {
            path: busybox.to_owned(),
        },
        _ => ImageError::Io {
            context: format!("reading {}", busybox.display()),
            source: e,
        },
    })?;
    let list_error = |detail: String| ImageError::BusyboxList {
        path: busybox.to_owned(),
        detail,
    };
    let output = Command::new(busybox)
        .arg("--list")
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| list_error(e.to_string()))?;
    if !output.status.success() {
        return Err(list_error(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let applets = String::from_utf8(output.stdout).map_err(|e| list_error(e.to_string()))?;

    let mut rootfs = Rootfs::new();
    rootfs.file("bin/busybox", 0o755, binary)?;
    let mut count = 0;
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        if applet.contains('/') {
            return Err(list_error(format!("unexpected applet name {applet:?}")));
        }
        rootfs.symlink(&format!("bin/{applet}"), "busybox")?;
        count += 1;
    }
    if count == 0 {
        return Err(list_error("no applets listed".to_owned()));
    }
    rootfs
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )?
        .file("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n")?
        .dir("root", 0o700)?
        .dir("tmp", 0o1777)?
        .dir("var/www", 0o755)?;
    Ok(ImageSpec {
        name: BUSYBOX_IMAGE.to_owned(),
        rootfs,
        config: ImageConfig {
            cmd: vec!["sh".to_owned()],
            env: vec![PATH_ENV.to_owned()],
            ..ImageConfig::default()
        },
    })
}

/// An image tarball written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    /// Image reference.
    pub name: String,
    /// Manifest digest (`sha256:…`).
    pub manifest_digest: String,
    /// Where the tarball is.
    pub path: PathBuf,
}

/// Builds the pause and busybox images into `dir` (the agent's airgap
/// directory, `DATA/agent/images/`), creating it if needed.
///
/// Each tarball is written to a temporary name and renamed into place, so an
/// importer never sees a partial file.
pub fn write_airgap_images(dir: &Path, tools: &HostTools) -> Result<Vec<WrittenImage>> {
    std::fs::create_dir_all(dir).map_err(ImageError::io(format!("creating {}", dir.display())))?;
    let specs = [
        ("skiff-pause.tar", pause_image(&tools.cc, dir)?),
        ("skiff-busybox.tar", busybox_image(&tools.busybox)?),
    ];
    let mut written = Vec::with_capacity(specs.len());
    for (file, spec) in specs {
        let archive = oci_archive(&spec)?;
        let path = dir.join(file);
        let partial = dir.join(format!(".{file}.partial"));
        std::fs::write(&partial, &archive.bytes)
            .map_err(ImageError::io(format!("writing {}", partial.display())))?;
        std::fs::rename(&partial, &path)
            .map_err(ImageError::io(format!("renaming into {}", path.display())))?;
        written.push(WrittenImage {
            name: archive.name,
            manifest_digest: archive.manifest_digest,
            path,
        });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;
    use std::time::{Duration, Instant};

    /// Unpacks a tar into path → (entry type, mode, mtime, link target, data).
    type Unpacked = Vec<(String, tar::EntryType, u32, u64, Option<String>, Vec<u8>)>;

    fn untar(bytes: &[u8]) -> Unpacked {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let header = entry.header().clone();
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let link = entry
                .link_name()
                .expect("link")
                .map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            out.push((
                path,
                header.entry_type(),
                header.mode().expect("mode"),
                header.mtime().expect("mtime"),
                link,
                data,
            ));
        }
        out
    }

    fn regular_files(bytes: &[u8]) -> HashMap<String, Vec<u8>> {
        untar(bytes)
            .into_iter()
            .filter(|e| e.1 == tar::EntryType::Regular)
            .map(|e| (e.0, e.5))
            .collect()
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let data = files
            .get(&format!("blobs/sha256/{hex}"))
            .unwrap_or_else(|| panic!("blob {digest} missing"));
        assert_eq!(sha256(data), digest, "blob content matches its digest");
        data
    }

    fn sample() -> ImageSpec {
        let mut rootfs = Rootfs::new();
        rootfs
            .file("/usr/bin/hello", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .expect("file")
            .symlink("bin/hi", "/usr/bin/hello")
            .expect("symlink")
            .dir("tmp", 0o1777)
            .expect("dir");
        ImageSpec {
            name: "docker.io/test/sample:1.0".to_owned(),
            rootfs,
            config: ImageConfig {
                entrypoint: vec!["/usr/bin/hello".to_owned()],
                cmd: vec!["x".to_owned()],
                env: vec![PATH_ENV.to_owned()],
                working_dir: String::new(),
            },
        }
    }

    #[test]
    fn rootfs_rejects_unclean_paths() {
        let mut rootfs = Rootfs::new();
        for bad in ["", "/", "a//b", "a/../b", "./a", "a/"] {
            assert!(
                matches!(rootfs.dir(bad, 0o755), Err(ImageError::InvalidPath { .. })),
                "{bad:?} must be rejected"
            );
        }
        rootfs.file("f", 0o644, b"x".to_vec()).expect("file");
        assert!(matches!(
            rootfs.file("f/g", 0o644, b"x".to_vec()),
            Err(ImageError::InvalidPath { .. })
        ));
    }

    #[test]
    fn layer_tar_is_sorted_with_parents_first_and_fixed_metadata() {
        let entries = untar(&sample().rootfs.to_tar().expect("tar"));
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/hi",
                "tmp/",
                "usr/",
                "usr/bin/",
                "usr/bin/hello"
            ]
        );
        assert!(entries.iter().all(|e| e.3 == 0), "every mtime is zero");
        let hi = &entries[1];
        assert_eq!(hi.1, tar::EntryType::Symlink);
        assert_eq!(hi.4.as_deref(), Some("/usr/bin/hello"));
        assert_eq!(entries[2].2, 0o1777, "sticky /tmp");
        assert_eq!(entries[5].2, 0o755);
        assert_eq!(entries[5].5, b"#!/bin/sh\necho hi\n");
    }

    #[test]
    fn archive_is_a_valid_oci_layout_whose_digests_match_content() {
        let archive = oci_archive(&sample()).expect("archive");
        let files = regular_files(&archive.bytes);
        assert_eq!(
            json(&files["oci-layout"]),
            serde_json::json!({"imageLayoutVersion": "1.0.0"})
        );

        let index = json(&files["index.json"]);
        assert_eq!(index["schemaVersion"], 2);
        let entry = &index["manifests"][0];
        assert_eq!(entry["mediaType"], MEDIA_MANIFEST);
        assert_eq!(
            entry["annotations"][ANNOTATION_IMAGE_NAME],
            "docker.io/test/sample:1.0"
        );
        assert_eq!(entry["annotations"][ANNOTATION_REF_NAME], "1.0");
        assert_eq!(entry["platform"]["os"], "linux");
        assert_eq!(entry["digest"], archive.manifest_digest.as_str());

        let manifest_bytes = blob(&files, &archive.manifest_digest);
        assert_eq!(entry["size"], manifest_bytes.len());
        let manifest = json(manifest_bytes);
        assert_eq!(manifest["mediaType"], MEDIA_MANIFEST);

        let config_desc = &manifest["config"];
        let config_bytes = blob(&files, config_desc["digest"].as_str().expect("digest"));
        assert_eq!(config_desc["size"], config_bytes.len());
        let config = json(config_bytes);
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/hello");
        assert_eq!(config["config"]["Cmd"][0], "x");
        assert_eq!(config["config"]["Env"][0], PATH_ENV);

        let layer_desc = &manifest["layers"][0];
        assert_eq!(layer_desc["mediaType"], MEDIA_LAYER_GZIP);
        let layer = blob(&files, layer_desc["digest"].as_str().expect("digest"));
        assert_eq!(layer_desc["size"], layer.len());
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(layer)
            .read_to_end(&mut unpacked)
            .expect("gunzip layer");
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&unpacked).as_str());
        assert_eq!(
            regular_files(&unpacked)["usr/bin/hello"],
            b"#!/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn archive_is_deterministic() {
        let first = oci_archive(&sample()).expect("archive");
        let second = oci_archive(&sample()).expect("archive");
        assert_eq!(first, second);

        let mut changed = sample();
        changed.config.cmd = vec!["y".to_owned()];
        assert_ne!(
            oci_archive(&changed).expect("archive").manifest_digest,
            first.manifest_digest
        );
    }

    #[test]
    fn tag_defaults_to_latest_and_ignores_registry_ports() {
        let mut spec = sample();
        spec.name = "localhost:5000/team/app".to_owned();
        let archive = oci_archive(&spec).expect("archive");
        let index = json(&regular_files(&archive.bytes)["index.json"]);
        assert_eq!(
            index["manifests"][0]["annotations"][ANNOTATION_REF_NAME],
            "latest"
        );
    }

    #[test]
    fn busybox_image_has_applets_users_and_tmp() {
        let spec = busybox_image(&HostTools::default().busybox)
            .expect("busybox image (scripts/setup.sh installs busybox-static)");
        let entries = untar(&spec.rootfs.to_tar().expect("tar"));
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.0 == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        for applet in ["bin/sh", "bin/httpd", "bin/nc", "bin/wget"] {
            assert_eq!(find(applet).4.as_deref(), Some("busybox"), "{applet}");
        }
        assert!(find("bin/busybox").5.len() > 100_000);
        assert!(String::from_utf8_lossy(&find("etc/passwd").5).starts_with("root:x:0:0:"));
        assert_eq!(find("tmp/").2, 0o1777);
        assert_eq!(spec.config.cmd, ["sh"]);
    }

    #[test]
    fn missing_tools_give_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = build_pause_binary(Path::new("/nonexistent/cc"), dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::CompilerMissing { .. }), "{err}");
        assert!(err.to_string().contains("setup.sh"));
        let err = busybox_image(Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(matches!(err, ImageError::BusyboxMissing { .. }), "{err}");
    }

    #[test]
    fn pause_binary_is_static_and_exits_on_sigterm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = build_pause_binary(Path::new("gcc"), dir.path())
            .expect("gcc builds pause (scripts/setup.sh installs gcc and libc6-dev)");
        assert_eq!(&binary[..4], b"\x7fELF");
        let path = dir.path().join("pause");
        std::fs::write(&path, &binary).expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");

        let mut child = Command::new(&path).spawn().expect("run pause");
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "pause keeps running"
        );
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "pause ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0));
    }

    #[test]
    fn airgap_dir_gets_both_images_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images_dir = dir.path().join("agent/images");
        let written = write_airgap_images(&images_dir, &HostTools::default()).expect("build");
        let names: Vec<&str> = written.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, [PAUSE_IMAGE, BUSYBOX_IMAGE]);
        let mut listed: Vec<String> = std::fs::read_dir(&images_dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, ["skiff-busybox.tar", "skiff-pause.tar"]);
        let again = write_airgap_images(&images_dir, &HostTools::default()).expect("rebuild");
        assert_eq!(again, written, "rebuilding gives the same digests");
        for image in &written {
            let bytes = std::fs::read(&image.path).expect("read");
            let index = json(&regular_files(&bytes)["index.json"]);
            assert_eq!(
                index["manifests"][0]["digest"],
                image.manifest_digest.as_str()
            );
        }
    }
}
