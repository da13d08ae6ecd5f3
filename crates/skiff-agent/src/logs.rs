//! Container logs: reading them for `kubectl logs`, and rotating them.
//!
//! containerd writes each container's stdout and stderr to one file in the
//! CRI log format, a line per write:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a whole line
//! 2016-10-06T00:17:09.669794203Z stderr P the first part of a long line,
//! 2016-10-06T00:17:09.669794204Z stderr F and its end
//! ```
//!
//! `F` marks a full line, `P` a partial one that the following line(s)
//! continue. [`write_logs`] turns such a file back into the container's
//! output with the options of `PodLogOptions`, as upstream's kubelet does:
//! `tailLines` counts raw file lines from the end, `sinceTime` drops older
//! lines, `timestamps` prefixes each output line with its stamp, `limitBytes`
//! cuts the output, and `follow` keeps reading new lines (across a rotation)
//! until the container stops.
//!
//! [`LogRotator`] keeps the files bounded: a file over the size limit is
//! renamed to `<name>.<YYYYmmdd-HHMMSS>` and the runtime asked to reopen the
//! original path. Upstream's kubelet reads only the current file; here
//! `tailLines` also reaches into the rotated files when the current one is
//! shorter, so that `--tail` right after a rotation still shows context.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use skiff_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ContainerStatusRequest,
    ListContainersRequest, ReopenContainerLogRequest,
};
use skiff_cri::{CriError, RuntimeService};
use tokio::fs::File;
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio_util::sync::CancellationToken;

/// How often a follower looks for new data when it is at the end of the file.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Block size for scanning a file backwards for `tailLines`.
const TAIL_BLOCK: u64 = 4096;

/// The `PodLogOptions` that shape the output, already parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading new lines until the container stops.
    pub follow: bool,
    /// Only the last this many lines (raw file lines, as upstream counts).
    pub tail_lines: Option<u64>,
    /// Drop lines stamped before this.
    pub since_time: Option<Timestamp>,
    /// Prefix each output line with its RFC 3339 timestamp and a space.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// Why reading or rotating logs failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file could not be opened.
    #[error("failed to open log file {path:?}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading the log file failed.
    #[error("failed to read log file {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed (typically: the client went away).
    #[error("failed to write logs")]
    Write(#[source] std::io::Error),
    /// Renaming or removing a log file during rotation failed.
    #[error("failed to rotate log file {path:?}")]
    Rotate {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused a call made for rotation.
    #[error(transparent)]
    Cri(#[from] Box<CriError>),
}

/// One parsed line of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
struct LogLine<'a> {
    timestamp: Timestamp,
    /// The text, with its newline for a full line and without for a partial.
    content: &'a [u8],
    partial: bool,
}

/// Parses `<timestamp> <stream> <tag> <text>\n`; `None` for a malformed line,
/// which upstream skips too.
fn parse_line(raw: &[u8]) -> Option<LogLine<'_>> {
    let mut fields = raw.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = fields.next()?;
    if stream != b"stdout" && stream != b"stderr" {
        return None;
    }
    // Tags may carry more after a colon (`F:...`); only the first one counts.
    let tag = fields.next()?;
    // An empty line may come without the space after the tag.
    let (tag, mut content) = match fields.next() {
        Some(content) => (tag, content),
        None => (tag.strip_suffix(b"\n")?, &b"\n"[..]),
    };
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return None,
    };
    if partial && let Some(stripped) = content.strip_suffix(b"\n") {
        content = stripped;
    }
    Some(LogLine {
        timestamp,
        content,
        partial,
    })
}

/// Where output goes, and when it must stop.
struct Sink<'w, W> {
    out: &'w mut W,
    opts: &'w LogOptions,
    /// Bytes still allowed by `limitBytes`.
    remaining: Option<u64>,
    /// Whether the next line starts a new output line (the previous was not
    /// partial), so gets a timestamp.
    at_line_start: bool,
}

/// Whether to keep going after a line.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    async fn line(&mut self, raw: &[u8]) -> Result<Flow, LogError> {
        let Some(line) = parse_line(raw) else {
            tracing::debug!(line = %String::from_utf8_lossy(raw), "skipping malformed log line");
            return Ok(Flow::More);
        };
        if self
            .opts
            .since_time
            .is_some_and(|since| line.timestamp < since)
        {
            return Ok(Flow::More);
        }
        let start = std::mem::replace(&mut self.at_line_start, !line.partial);
        let mut text = Vec::with_capacity(line.content.len() + 32);
        if self.opts.timestamps && start {
            text.extend_from_slice(line.timestamp.to_string().as_bytes());
            text.push(b' ');
        }
        text.extend_from_slice(line.content);
        if let Some(remaining) = self.remaining.as_mut() {
            let allowed = usize::try_from(*remaining).unwrap_or(usize::MAX);
            text.truncate(allowed);
            *remaining -= text.len() as u64;
        }
        self.out.write_all(&text).await.map_err(LogError::Write)?;
        Ok(if self.remaining == Some(0) {
            Flow::Done
        } else {
            Flow::More
        })
    }

    async fn flush(&mut self) -> Result<(), LogError> {
        self.out.flush().await.map_err(LogError::Write)
    }
}

/// Writes the log of one container instance, stored at `path`, to `out`.
///
/// With `opts.follow` it keeps polling for new lines, follows the file when
/// it is rotated, and returns once `still_running` says no and the file is
/// drained. A write error (the client went away) ends it with
/// [`LogError::Write`].
pub async fn write_logs<W: AsyncWrite + Unpin>(
    path: &Path,
    opts: &LogOptions,
    still_running: impl Fn() -> BoxFuture<'static, bool>,
    out: &mut W,
) -> Result<(), LogError> {
    let mut file = open(path).await?;
    let mut sink = Sink {
        out,
        opts,
        remaining: opts.limit_bytes,
        at_line_start: true,
    };
    if opts.limit_bytes == Some(0) {
        return Ok(());
    }
    let mut start = 0;
    if let Some(tail) = opts.tail_lines {
        let (offset, found) = tail_start(&mut file, path, tail).await?;
        start = offset;
        let older = rotated_tail(path, tail - found).await?;
        for (rotated, offset) in older {
            let mut old = open(&rotated).await?;
            old.seek(SeekFrom::Start(offset))
                .await
                .map_err(|source| read_error(&rotated, source))?;
            if copy_lines(BufReader::new(old), &rotated, &mut sink).await? == Flow::Done {
                return sink.flush().await;
            }
        }
    }
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|source| read_error(path, source))?;
    let mut reader = BufReader::new(file);
    if !opts.follow {
        copy_lines(reader, path, &mut sink).await?;
        return sink.flush().await;
    }

    let mut pending = Vec::new();
    let mut stopped = false;
    loop {
        let read = reader
            .read_until(b'\n', &mut pending)
            .await
            .map_err(|source| read_error(path, source))?;
        if pending.ends_with(b"\n") {
            let flow = sink.line(&pending).await?;
            pending.clear();
            if flow == Flow::Done {
                break;
            }
            continue;
        }
        if read > 0 {
            // A line still being written: wait for the rest of it.
            continue;
        }
        // At the end of the file.
        sink.flush().await?;
        if stopped {
            if !pending.is_empty() {
                sink.line(&pending).await?;
            }
            break;
        }
        if let Some(next) = rotated_away(reader.get_ref(), path).await {
            // The old file is drained; carry on from the start of the new one.
            reader = BufReader::new(next);
            continue;
        }
        if !still_running().await {
            // One more pass picks up what was written just before it stopped.
            stopped = true;
            continue;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
    sink.flush().await
}

/// Copies whole lines (and a final unterminated one) until the end of the
/// file or the byte limit.
async fn copy_lines<W: AsyncWrite + Unpin>(
    mut reader: BufReader<File>,
    path: &Path,
    sink: &mut Sink<'_, W>,
) -> Result<Flow, LogError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| read_error(path, source))?;
        if read == 0 {
            return Ok(Flow::More);
        }
        if sink.line(&line).await? == Flow::Done {
            return Ok(Flow::Done);
        }
    }
}

async fn open(path: &Path) -> Result<File, LogError> {
    File::open(path).await.map_err(|source| LogError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn read_error(path: &Path, source: std::io::Error) -> LogError {
    LogError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// If `path` now names another file than `current` (it was rotated), that
/// new file, opened.
async fn rotated_away(current: &File, path: &Path) -> Option<File> {
    let open_id = current.metadata().await.ok().map(|m| (m.dev(), m.ino()))?;
    let path_id = tokio::fs::metadata(path)
        .await
        .ok()
        .map(|m| (m.dev(), m.ino()))?;
    if open_id == path_id {
        return None;
    }
    File::open(path).await.ok()
}

/// The offset where the last `n` newline-terminated lines of `file` start,
/// and how many such lines were found (fewer than `n` for a short file, then
/// the offset is 0). An unterminated last line is output but not counted, as
/// upstream does.
async fn tail_start(file: &mut File, path: &Path, n: u64) -> Result<(u64, u64), LogError> {
    let size = file
        .seek(SeekFrom::End(0))
        .await
        .map_err(|source| read_error(path, source))?;
    let mut buf = vec![0; TAIL_BLOCK as usize];
    let mut right = size;
    let mut newlines = 0u64;
    while right > 0 {
        let left = right.saturating_sub(TAIL_BLOCK);
        let chunk = &mut buf[..(right - left) as usize];
        file.seek(SeekFrom::Start(left))
            .await
            .map_err(|source| read_error(path, source))?;
        file.read_exact(chunk)
            .await
            .map_err(|source| read_error(path, source))?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            if *byte != b'\n' {
                continue;
            }
            newlines += 1;
            // The (n+1)-th newline from the end closes the line before the
            // first one wanted.
            if newlines > n {
                return Ok((left + i as u64 + 1, n));
            }
        }
        right = left;
    }
    Ok((0, newlines))
}

/// The rotated files of `path` (`<path>.<stamp>`), oldest first.
async fn rotated_files(path: &Path) -> Result<Vec<PathBuf>, LogError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(read_error(dir, source)),
    };
    let mut found = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|source| read_error(dir, source))?
    {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if let Some(stamp) = file_name.strip_prefix(&prefix)
            && !stamp.is_empty()
            && stamp.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        {
            found.push(entry.path());
        }
    }
    // The stamps sort chronologically.
    found.sort();
    Ok(found)
}

/// The rotated files (oldest first) and start offsets that hold the `n`
/// lines before the current file.
async fn rotated_tail(path: &Path, mut n: u64) -> Result<Vec<(PathBuf, u64)>, LogError> {
    let mut parts = Vec::new();
    if n == 0 {
        return Ok(parts);
    }
    for rotated in rotated_files(path).await?.into_iter().rev() {
        let mut file = open(&rotated).await?;
        let (offset, found) = tail_start(&mut file, &rotated, n).await?;
        parts.push((rotated, offset));
        n -= found;
        if n == 0 {
            break;
        }
    }
    parts.reverse();
    Ok(parts)
}

/// Limits for [`LogRotator`], with upstream's kubelet defaults
/// (`containerLogMaxSize` 10 MiB, `containerLogMaxFiles` 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// A file larger than this is rotated.
    pub max_size: u64,
    /// Files kept per container, the current one included (at least 2).
    pub max_files: usize,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// Rotates the log files of running containers that grew past the limit.
pub struct LogRotator {
    runtime: Arc<dyn RuntimeService>,
    policy: RotationPolicy,
}

impl LogRotator {
    /// A rotator over the containers of `runtime`.
    pub fn new(runtime: Arc<dyn RuntimeService>, policy: RotationPolicy) -> Self {
        Self { runtime, policy }
    }

    /// Checks every `interval` (upstream: 10 s) until `shutdown`.
    pub async fn run(&self, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.rotate_all().await {
                tracing::warn!(error = %e, "log rotation failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass over the running containers; returns how many files were
    /// rotated. A failure on one container is logged and the others still
    /// get their turn; only failing to list containers is an error.
    pub async fn rotate_all(&self) -> Result<usize, LogError> {
        let running = self
            .runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    state: Some(ContainerStateValue {
                        state: ContainerState::ContainerRunning as i32,
                    }),
                    ..ContainerFilter::default()
                }),
            })
            .await
            .map_err(Box::new)?;
        let mut rotated = 0;
        for container in running.containers {
            match self.rotate_container(&container.id).await {
                Ok(true) => rotated += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(container = %container.id, error = %e, "rotating container log");
                }
            }
        }
        Ok(rotated)
    }

    async fn rotate_container(&self, id: &str) -> Result<bool, LogError> {
        let status = self
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(Box::new)?;
        let Some(path) = status
            .status
            .map(|s| PathBuf::from(s.log_path))
            .filter(|p| !p.as_os_str().is_empty())
        else {
            return Ok(false);
        };
        let size = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            // Not written yet, or being reopened.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(rotate_error(&path, source)),
        };
        if size <= self.policy.max_size {
            return Ok(false);
        }
        self.remove_excess(&path).await?;
        let stamp = Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let target = PathBuf::from(format!("{}.{stamp}", path.display()));
        if tokio::fs::try_exists(&target).await.unwrap_or(true) {
            // Rotated within this second already; the next pass will do.
            return Ok(false);
        }
        tokio::fs::rename(&path, &target)
            .await
            .map_err(|source| rotate_error(&path, source))?;
        let reopened = self
            .runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.to_owned(),
            })
            .await;
        if let Err(e) = reopened {
            // Put it back, so that the runtime keeps a file to write to and
            // the next pass tries again.
            tokio::fs::rename(&target, &path)
                .await
                .map_err(|source| rotate_error(&path, source))?;
            return Err(Box::new(e).into());
        }
        Ok(true)
    }

    /// Deletes the oldest rotated files so that, after one more rotation,
    /// at most `max_files` remain with the current one.
    async fn remove_excess(&self, path: &Path) -> Result<(), LogError> {
        let rotated = rotated_files(path).await?;
        let keep = self.policy.max_files.max(2) - 2;
        let excess = rotated.len().saturating_sub(keep);
        for old in &rotated[..excess] {
            tokio::fs::remove_file(old)
                .await
                .map_err(|source| rotate_error(old, source))?;
        }
        Ok(())
    }
}

fn rotate_error(path: &Path, source: std::io::Error) -> LogError {
    LogError::Rotate {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::FutureExt;
    use skiff_cri::Op;
    use skiff_cri::fake::FakeRuntime;
    use skiff_cri::v1::{
        ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, PodSandboxConfig,
        PodSandboxMetadata, RunPodSandboxRequest, StartContainerRequest,
    };

    use super::*;

    const T1: &str = "2024-01-01T00:00:01.5Z";
    const T2: &str = "2024-01-01T00:00:02Z";
    const T3: &str = "2024-01-01T00:00:03.000000123Z";

    fn not_running() -> BoxFuture<'static, bool> {
        async { false }.boxed()
    }

    async fn read(path: &Path, opts: LogOptions) -> String {
        let mut out = Vec::new();
        write_logs(path, &opts, not_running, &mut out)
            .await
            .expect("logs");
        String::from_utf8(out).expect("utf-8")
    }

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("0.log");
        std::fs::write(
            &path,
            format!(
                "{T1} stdout F one\n{T2} stderr P tw\n{T2} stderr F o\nnot a log line\n{T3} stdout F three\n"
            ),
        )
        .expect("write");
        path
    }

    #[test]
    fn parses_full_partial_and_bad_lines() {
        let full = parse_line(b"2024-01-01T00:00:02Z stdout F hi there\n").expect("full");
        assert_eq!(full.content, b"hi there\n");
        assert!(!full.partial);
        let partial = parse_line(b"2024-01-01T00:00:02Z stderr P hi\n").expect("partial");
        assert_eq!(partial.content, b"hi");
        assert!(partial.partial);
        let empty = parse_line(b"2024-01-01T00:00:02+01:00 stdout F\n").expect("empty line");
        assert_eq!(empty.content, b"\n");
        assert_eq!(empty.timestamp.to_string(), "2023-12-31T23:00:02Z");
        let spaced = parse_line(b"2024-01-01T00:00:02Z stdout P \n").expect("empty partial");
        assert_eq!(spaced.content, b"");
        assert!(parse_line(b"garbage\n").is_none());
        assert!(parse_line(b"2024-01-01T00:00:02Z stdin F x\n").is_none());
        assert!(parse_line(b"2024-01-01T00:00:02Z stdout X x\n").is_none());
    }

    #[tokio::test]
    async fn joins_partial_lines_and_skips_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = sample(dir.path());
        assert_eq!(
            read(&path, LogOptions::default()).await,
            "one\ntwo\nthree\n"
        );
    }

    #[tokio::test]
    async fn timestamps_prefix_each_output_line_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = sample(dir.path());
        let opts = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            read(&path, opts).await,
            format!("{T1} one\n{T2} two\n{T3} three\n")
        );
    }

    #[tokio::test]
    async fn tail_since_and_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = sample(dir.path());
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..LogOptions::default()
        };
        assert_eq!(read(&path, tail(0)).await, "");
        assert_eq!(read(&path, tail(1)).await, "three\n");
        // Raw lines are counted, as upstream does: the bad line is one.
        assert_eq!(read(&path, tail(3)).await, "o\nthree\n");
        assert_eq!(read(&path, tail(100)).await, "one\ntwo\nthree\n");

        let since = LogOptions {
            since_time: Some(T2.parse().expect("time")),
            ..LogOptions::default()
        };
        assert_eq!(read(&path, since).await, "two\nthree\n");

        let limit = |n| LogOptions {
            limit_bytes: Some(n),
            ..LogOptions::default()
        };
        assert_eq!(read(&path, limit(6)).await, "one\ntw");
        assert_eq!(read(&path, limit(0)).await, "");
    }

    #[tokio::test]
    async fn tail_reaches_into_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        std::fs::write(
            dir.path().join("0.log.20240101-000000"),
            format!("{T1} stdout F a\n{T1} stdout F b\n"),
        )
        .expect("write");
        std::fs::write(
            dir.path().join("0.log.20240101-000001"),
            format!("{T2} stdout F c\n"),
        )
        .expect("write");
        std::fs::write(dir.path().join("0.log.tmp"), "ignored").expect("write");
        std::fs::write(&path, format!("{T3} stdout F d\n")).expect("write");
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..LogOptions::default()
        };
        assert_eq!(read(&path, tail(1)).await, "d\n");
        assert_eq!(read(&path, tail(3)).await, "b\nc\nd\n");
        assert_eq!(read(&path, tail(10)).await, "a\nb\nc\nd\n");
        // Without a tail only the current file is read, as upstream does.
        assert_eq!(read(&path, LogOptions::default()).await, "d\n");
    }

    #[tokio::test]
    async fn tail_scans_across_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let text: String = (0..2000)
            .map(|i| format!("{T1} stdout F line {i}\n"))
            .collect();
        std::fs::write(&path, text).expect("write");
        let opts = LogOptions {
            tail_lines: Some(1500),
            ..LogOptions::default()
        };
        let out = read(&path, opts).await;
        assert_eq!(out.lines().count(), 1500);
        assert!(out.starts_with("line 500\n"), "{}", &out[..20]);
    }

    #[tokio::test]
    async fn missing_file_is_an_open_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut out = Vec::new();
        let err = write_logs(
            &dir.path().join("absent.log"),
            &LogOptions::default(),
            not_running,
            &mut out,
        )
        .await
        .expect_err("absent");
        assert!(matches!(err, LogError::Open { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn follow_reads_new_lines_through_a_rotation_until_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        std::fs::write(&path, format!("{T1} stdout F first\n")).expect("write");
        let running = Arc::new(AtomicBool::new(true));
        let (mut reader, mut writer) = tokio::io::duplex(1024);
        let follower = tokio::spawn({
            let path = path.clone();
            let running = Arc::clone(&running);
            async move {
                let opts = LogOptions {
                    follow: true,
                    ..LogOptions::default()
                };
                let still = move || {
                    let running = running.load(Ordering::SeqCst);
                    async move { running }.boxed()
                };
                write_logs(&path, &opts, still, &mut writer).await
            }
        });
        let mut got = Vec::new();
        let mut read_until = async |want: &str| {
            while !String::from_utf8_lossy(&got).ends_with(want) {
                let mut buf = [0; 256];
                let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
                    .await
                    .expect("output in time")
                    .expect("read");
                assert!(n > 0, "stream ended early");
                got.extend_from_slice(&buf[..n]);
            }
        };
        read_until("first\n").await;

        // A line written in two pieces is output once complete.
        let append = |text: String| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(text.as_bytes()).expect("append");
        };
        append(format!("{T2} stdout F sec"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        append("ond\n".into());
        read_until("second\n").await;

        // Rotation: the file is renamed, a new one created at the path.
        std::fs::rename(&path, dir.path().join("0.log.20240101-000000")).expect("rename");
        std::fs::write(&path, format!("{T3} stdout F third\n")).expect("new file");
        read_until("third\n").await;

        // The container stops after one more line: the follower drains it
        // and ends.
        append(format!("{T3} stdout F last\n"));
        running.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("follower ends")
            .expect("join")
            .expect("no error");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.expect("read rest");
        got.extend_from_slice(&rest);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "first\nsecond\nthird\nlast\n"
        );
    }

    async fn running_container(fake: &FakeRuntime, log_dir: &Path) -> String {
        fake.add_image("busybox");
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            ..PodSandboxConfig::default()
        };
        let sandbox = fake
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                ..RunPodSandboxRequest::default()
            })
            .await
            .expect("sandbox")
            .pod_sandbox_id;
        let id = fake
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox,
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "c".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: "busybox".into(),
                        ..ImageSpec::default()
                    }),
                    log_path: "c/0.log".into(),
                    ..ContainerConfig::default()
                }),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .expect("create")
            .container_id;
        fake.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start");
        id
    }

    #[tokio::test]
    async fn rotator_renames_big_files_reopens_and_prunes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRuntime::new());
        running_container(&fake, dir.path()).await;
        let log_dir = dir.path().join("c");
        std::fs::create_dir_all(&log_dir).expect("mkdir");
        let path = log_dir.join("0.log");
        for stamp in ["20200101-000000", "20200101-000001", "20200101-000002"] {
            std::fs::write(log_dir.join(format!("0.log.{stamp}")), "old").expect("write");
        }
        let rotator = LogRotator::new(
            fake.clone(),
            RotationPolicy {
                max_size: 10,
                max_files: 3,
            },
        );

        std::fs::write(&path, "small").expect("write");
        assert_eq!(rotator.rotate_all().await.expect("pass"), 0);
        assert_eq!(fake.call_count(Op::ReopenContainerLog), 0);

        std::fs::write(&path, "more than ten bytes").expect("write");
        assert_eq!(rotator.rotate_all().await.expect("pass"), 1);
        assert_eq!(fake.call_count(Op::ReopenContainerLog), 1);
        // The runtime reopened an empty file; of the old ones only the
        // newest is kept, beside the one just rotated.
        assert_eq!(std::fs::read(&path).expect("current"), b"");
        let mut names: Vec<String> = std::fs::read_dir(&log_dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "0.log");
        assert_eq!(names[1], "0.log.20200101-000002");
        assert_eq!(
            std::fs::read(log_dir.join(&names[2])).expect("rotated"),
            b"more than ten bytes"
        );
    }

    #[tokio::test]
    async fn rotator_puts_the_file_back_when_reopen_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRuntime::new());
        running_container(&fake, dir.path()).await;
        let log_dir = dir.path().join("c");
        std::fs::create_dir_all(&log_dir).expect("mkdir");
        let path = log_dir.join("0.log");
        std::fs::write(&path, "more than ten bytes").expect("write");
        fake.fail_next(
            Op::ReopenContainerLog,
            tonic::Status::unavailable("runtime down"),
        );
        let rotator = LogRotator::new(
            fake.clone(),
            RotationPolicy {
                max_size: 10,
                max_files: 5,
            },
        );
        assert_eq!(rotator.rotate_all().await.expect("pass"), 0);
        assert_eq!(
            std::fs::read(&path).expect("still there"),
            b"more than ten bytes"
        );
        assert_eq!(std::fs::read_dir(&log_dir).expect("list").count(), 1);
    }
}
