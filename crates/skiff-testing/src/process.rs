//! Running child processes with deadlines, and keeping servers from outliving
//! the test binary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long a client command may take before the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Poll `check` every 100 ms until it returns true; panics after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `command` to completion, feeding it `stdin`, and return its output.
/// Panics if it runs longer than `timeout`, after killing it.
pub fn output_with_timeout(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let description = format!("{command:?}");
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let pid = Pid::from_child(&child);
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // A separate thread, so a child that does not read its input cannot
        // deadlock us; a write error means the child exited, which its status shows.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("waiting for {description}: {e}"),
        Err(_) => {
            let _ = kill_process(pid, Signal::KILL);
            let output = rx.recv_timeout(Duration::from_secs(5));
            let stderr = output
                .ok()
                .and_then(Result::ok)
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!("{description} did not finish within {timeout:?}; stderr:\n{stderr}");
        }
    }
}

/// A command whose process dies with this one, even when this process exits
/// without running destructors (statics are never dropped, and a failing test
/// binary may be killed). Configure it through `DerefMut` like a [`Command`].
///
/// The program runs under `setpriv --pdeathsig KILL`, which execs it (so the
/// child's pid is the program's). The kernel sends that signal when the
/// *thread* that forked the child exits, and test threads are short-lived, so
/// [`TiedCommand::spawn`] forks from one thread that lives as long as the process.
pub struct TiedCommand(Command);

impl TiedCommand {
    /// A command running `program`.
    pub fn new(program: impl AsRef<std::ffi::OsStr>) -> TiedCommand {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).arg(program);
        TiedCommand(command)
    }

    /// Start the process from the long-lived spawner thread.
    pub fn spawn(self) -> std::io::Result<Child> {
        type Request = (Command, Sender<std::io::Result<Child>>);
        static SPAWNER: OnceLock<std::sync::Mutex<Sender<Request>>> = OnceLock::new();
        let spawner = SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            thread::Builder::new()
                .name("skiff-testing-spawner".into())
                .spawn(move || {
                    for (mut command, reply) in rx {
                        let _ = reply.send(command.spawn());
                    }
                })
                .expect("cannot start the spawner thread");
            std::sync::Mutex::new(tx)
        });
        let gone = || std::io::Error::other("the spawner thread is gone");
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send((self.0, reply_tx))
            .map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

impl std::ops::Deref for TiedCommand {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.0
    }
}

impl std::ops::DerefMut for TiedCommand {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.0
    }
}

/// Send `signal` to the child, ignoring a child that already exited.
pub fn signal(child: &Child, signal: Signal) {
    let _ = kill_process(Pid::from_child(child), signal);
}

/// Wait for `child` to exit, for at most `timeout`. True if it exited.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A long-running client (such as `kubectl get -w`) whose output lines are
/// read as they come. Killed on drop.
pub struct LineWatcher {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl LineWatcher {
    /// Start `command` with its stdout captured line by line.
    pub fn spawn(mut command: Command) -> LineWatcher {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let description = format!("{command:?}");
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        let stdout: ChildStdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineWatcher {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a line satisfying `matches` and return it. Panics, listing every
    /// line seen, if none arrives within `timeout` or the output ends.
    pub fn wait_for(&mut self, timeout: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no matching line within {timeout:?}; lines so far:\n{}",
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "output ended without a matching line; lines:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

impl Drop for LineWatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_feeds_stdin_and_captures_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "tr a-z A-Z; echo err >&2; exit 3"]);
        let out = output_with_timeout(cmd, Some(b"hello"), Duration::from_secs(10));
        assert_eq!(out.stdout, b"HELLO");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    #[should_panic(expected = "did not finish within")]
    fn output_times_out() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        output_with_timeout(cmd, None, Duration::from_millis(200));
    }

    #[test]
    fn tied_children_run_with_environment() {
        let mut cmd = TiedCommand::new("sh");
        cmd.args(["-c", "test \"$SKIFF_X\" = yes"])
            .env("SKIFF_X", "yes");
        let mut child = cmd.spawn().unwrap();
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn line_watcher_sees_lines_in_order() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two; sleep 30"]);
        let mut watcher = LineWatcher::spawn(cmd);
        assert_eq!(
            watcher.wait_for(Duration::from_secs(10), |l| l == "two"),
            "two"
        );
        assert_eq!(watcher.seen(), ["one", "two"]);
    }

    #[test]
    fn wait_timeout_reports_a_running_child() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(!wait_timeout(&mut child, Duration::from_millis(100)));
        signal(&child, Signal::KILL);
        assert!(wait_timeout(&mut child, Duration::from_secs(10)));
    }
}
