//! Commands in a container through CRI `ExecSync`, for exec probes and hooks.

use std::time::Duration;

use skiff_cri::v1::ExecSyncRequest;
use skiff_cri::{CriError, RuntimeService};
use tonic::Code;

use super::{ProbeOutcome, truncate_output};

/// How much longer than the runtime-side timeout the client waits for an
/// `ExecSync` answer. The runtime kills the command at its timeout, but an
/// exec whose children keep stdout open can hold the answer back; the
/// client-side deadline bounds that, and the slack lets the runtime's own
/// (more precise) timeout answer first.
const DEADLINE_SLACK: Duration = Duration::from_secs(2);

/// A command that ran to completion (with any exit code).
#[derive(Debug)]
pub(super) struct Completed {
    pub exit_code: i32,
    /// Stdout followed by stderr, lossily decoded, cut to 10 KiB: what
    /// upstream reports as the command's output.
    pub output: String,
    /// Stderr alone, which upstream's exit error quotes.
    pub stderr: String,
}

/// Why a command did not complete.
#[derive(Debug)]
pub(super) enum ExecError {
    /// Neither the runtime nor the command answered within the timeout.
    TimedOut,
    /// The runtime refused or failed the call (container not running, …).
    Runtime(CriError),
}

/// Runs `command` in the container, giving the runtime `timeout` (rounded
/// up to whole seconds, as CRI counts) and waiting at most `deadline`.
pub(super) async fn run(
    runtime: &dyn RuntimeService,
    container_id: &str,
    command: Vec<String>,
    timeout: Duration,
    deadline: Duration,
) -> Result<Completed, ExecError> {
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let request = ExecSyncRequest {
        container_id: container_id.to_owned(),
        cmd: command,
        timeout: i64::try_from(seconds).unwrap_or(i64::MAX),
    };
    match runtime.exec_sync(request, deadline).await {
        Ok(response) => {
            let mut combined = response.stdout;
            combined.extend_from_slice(&response.stderr);
            Ok(Completed {
                exit_code: response.exit_code,
                output: truncate_output(String::from_utf8_lossy(&combined).into_owned()),
                stderr: truncate_output(String::from_utf8_lossy(&response.stderr).into_owned()),
            })
        }
        Err(err) if err.code() == Code::DeadlineExceeded => Err(ExecError::TimedOut),
        Err(err) => Err(ExecError::Runtime(err)),
    }
}

/// Upstream's message for a command that overran its timeout.
pub(super) fn timed_out(command: &[String]) -> String {
    format!("command {:?} timed out", command.join(" "))
}

/// One exec probe attempt: exit 0 passes; otherwise the failure message is
/// the command's output, as upstream reports it.
pub(super) async fn probe(
    runtime: &dyn RuntimeService,
    container_id: &str,
    command: Vec<String>,
    timeout: Duration,
) -> ProbeOutcome {
    let message_if_late = timed_out(&command);
    match run(
        runtime,
        container_id,
        command,
        timeout,
        timeout + DEADLINE_SLACK,
    )
    .await
    {
        Ok(done) if done.exit_code == 0 => ProbeOutcome::Success,
        Ok(done) => ProbeOutcome::Failure(done.output),
        Err(ExecError::TimedOut) => ProbeOutcome::Failure(message_if_late),
        Err(ExecError::Runtime(err)) => ProbeOutcome::Unknown(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use skiff_cri::Op;
    use skiff_cri::fake::FakeRuntime;
    use skiff_cri::v1::ExecSyncResponse;
    use tonic::Status;

    use super::super::MAX_OUTPUT;
    use super::super::testutil::running_container;
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        ["sh", "-c", script].map(String::from).to_vec()
    }

    #[tokio::test]
    async fn exit_zero_passes_and_the_deadline_is_always_bounded() {
        let fake = FakeRuntime::new();
        let id = running_container(&fake).await;
        let outcome = probe(&fake, &id, sh("true"), Duration::from_secs(3)).await;
        assert_eq!(outcome, ProbeOutcome::Success);

        let requests = fake.exec_requests();
        assert_eq!(requests.len(), 1);
        let (request, deadline) = &requests[0];
        assert_eq!(request.container_id, id);
        assert_eq!(request.cmd, sh("true"));
        assert_eq!(request.timeout, 3);
        assert_eq!(*deadline, Duration::from_secs(3) + DEADLINE_SLACK);
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_the_output() {
        let fake = FakeRuntime::new();
        let id = running_container(&fake).await;
        fake.push_exec_response(ExecSyncResponse {
            stdout: b"checking\n".to_vec(),
            stderr: b"cat: can't open '/tmp/healthy': No such file or directory\n".to_vec(),
            exit_code: 1,
        });
        let outcome = probe(&fake, &id, sh("cat /tmp/healthy"), Duration::from_secs(1)).await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure(
                "checking\ncat: can't open '/tmp/healthy': No such file or directory\n".into()
            )
        );
    }

    #[tokio::test]
    async fn a_timeout_fails_and_a_runtime_error_is_unknown() {
        let fake = FakeRuntime::new();
        let id = running_container(&fake).await;
        fake.fail_next(Op::ExecSync, Status::deadline_exceeded("exec timed out"));
        let outcome = probe(&fake, &id, sh("sleep 10"), Duration::from_secs(1)).await;
        assert_eq!(
            outcome,
            ProbeOutcome::Failure("command \"sh -c sleep 10\" timed out".into())
        );

        fake.exit_container(&id, 0).expect("exit");
        let outcome = probe(&fake, &id, sh("true"), Duration::from_secs(1)).await;
        assert!(
            matches!(&outcome, ProbeOutcome::Unknown(m) if m.contains("not running")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn output_is_capped_at_10_kib() {
        let fake = FakeRuntime::new();
        let id = running_container(&fake).await;
        fake.push_exec_response(ExecSyncResponse {
            stdout: vec![b'x'; 3 * MAX_OUTPUT],
            stderr: Vec::new(),
            exit_code: 2,
        });
        let done = run(
            &fake,
            &id,
            sh("yes"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .await
        .expect("ran");
        assert_eq!(done.exit_code, 2);
        assert_eq!(done.output.len(), MAX_OUTPUT);
    }
}
