//! `postStart` and `preStop` handlers.
//!
//! Upstream's rules: an `exec` hook fails on a non-zero exit; an `httpGet`
//! hook fails only when no response comes (any status is fine), and an
//! HTTPS hook answered in plain HTTP is retried over HTTP without its
//! `Authorization` header; a `sleep` hook fails if it is cut short. The
//! deprecated `tcpSocket` handler is not run.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use skiff_cri::{CriError, RuntimeService};

use super::ProbeTarget;
use super::exec::{self, ExecError};
use super::http::{self, FetchError, HTTP_TO_HTTPS, Request, Scheme};

/// Why a lifecycle hook failed. `Display` is upstream's error text; the
/// event message is [`HookError::event_message`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The exec hook's command exited non-zero.
    #[error("command '{command}' exited with {exit_code}: {stderr}")]
    Exited {
        /// The command, its words joined by spaces.
        command: String,
        /// Its exit code.
        exit_code: i32,
        /// What it wrote to stderr.
        stderr: String,
        /// Stdout then stderr, as upstream's event quotes it.
        output: String,
    },
    /// The exec hook's command did not finish within the timeout.
    #[error("command {command:?} timed out")]
    TimedOut {
        /// The command, its words joined by spaces.
        command: String,
    },
    /// The runtime could not run the exec hook (container gone, …).
    #[error(transparent)]
    Runtime(CriError),
    /// The HTTP hook got no response; the text says why (Go's wording,
    /// e.g. `Get "http://10.42.0.5:80/hook": dial tcp …: connection refused`).
    #[error("{0}")]
    Http(String),
    /// The sleep hook was cut short by the timeout.
    #[error("container terminated before sleep hook finished")]
    SleepInterrupted,
    /// The handler has no action this node runs (none, or `tcpSocket`).
    #[error("invalid handler: {0}")]
    InvalidHandler(String),
}

impl HookError {
    /// Upstream's message for the `FailedPostStartHook` /
    /// `FailedPreStopHook` event, e.g. `Exec lifecycle hook ([sh -c exit 1])
    /// for Container "app" in Pod "web_default(uid)" failed - error: …,
    /// message: "…"`.
    pub fn event_message(
        &self,
        handler: &LifecycleHandler,
        container_name: &str,
        pod: &Pod,
    ) -> String {
        let meta = &pod.metadata;
        let pod_name = format!(
            "{}_{}({})",
            meta.name.as_deref().unwrap_or_default(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default()
        );
        if let Some(action) = &handler.exec {
            let command = action.command.as_deref().unwrap_or_default().join(" ");
            let output = match self {
                HookError::Exited { output, .. } => output.as_str(),
                _ => "",
            };
            format!(
                "Exec lifecycle hook ([{command}]) for Container {container_name:?} in Pod \
                 {pod_name:?} failed - error: {self}, message: {output:?}"
            )
        } else if let Some(action) = &handler.http_get {
            format!(
                "HTTP lifecycle hook ({}) for Container {container_name:?} in Pod {pod_name:?} \
                 failed - error: {self}",
                action.path.as_deref().unwrap_or_default()
            )
        } else if let Some(action) = &handler.sleep {
            format!(
                "Sleep lifecycle hook ({}) for Container {container_name:?} in Pod {pod_name:?} \
                 failed - error: {self}",
                action.seconds
            )
        } else {
            format!("Cannot run handler: {self}")
        }
    }
}

/// Runs a lifecycle handler of `container`, for at most `timeout` (for
/// `preStop`, what is left of the grace period). An exec runs in
/// `target.container_id`; an HTTP hook with no host goes to the pod IP.
pub async fn run_hook(
    handler: &LifecycleHandler,
    container: &Container,
    target: &ProbeTarget,
    runtime: &dyn RuntimeService,
    timeout: Duration,
) -> Result<(), HookError> {
    if let Some(action) = &handler.exec {
        let command = action.command.clone().unwrap_or_default();
        let joined = command.join(" ");
        match exec::run(runtime, &target.container_id, command, timeout, timeout).await {
            Ok(done) if done.exit_code == 0 => Ok(()),
            Ok(done) => Err(HookError::Exited {
                command: joined,
                exit_code: done.exit_code,
                stderr: done.stderr,
                output: done.output,
            }),
            Err(ExecError::TimedOut) => Err(HookError::TimedOut { command: joined }),
            Err(ExecError::Runtime(err)) => Err(HookError::Runtime(err)),
        }
    } else if let Some(action) = &handler.http_get {
        let request =
            Request::new(action, container, target, "lifecycle").map_err(HookError::Http)?;
        let work = async {
            match get(&request).await {
                Err(message) if message.ends_with(HTTP_TO_HTTPS) => {
                    tracing::warn!(
                        url = %request.url(),
                        "HTTPS lifecycle hook got an HTTP response; retrying over HTTP"
                    );
                    get(&request.downgraded()).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result.map_err(HookError::Http),
            Err(_) => Err(HookError::Http(http::timed_out(&request))),
        }
    } else if let Some(action) = &handler.sleep {
        let wanted = Duration::from_secs(u64::try_from(action.seconds).unwrap_or(0));
        if wanted <= timeout {
            tokio::time::sleep(wanted).await;
            Ok(())
        } else {
            tokio::time::sleep(timeout).await;
            Err(HookError::SleepInterrupted)
        }
    } else if handler.tcp_socket.is_some() {
        Err(HookError::InvalidHandler(
            "tcpSocket is not supported as a lifecycle handler".to_owned(),
        ))
    } else {
        Err(HookError::InvalidHandler("no action set".to_owned()))
    }
}

/// An HTTP hook's request: any response will do, and a body that breaks
/// off is no failure (upstream discards it).
async fn get(request: &Request) -> Result<(), String> {
    match http::fetch(request, true).await {
        Ok(_) | Err(FetchError::Body(_)) => Ok(()),
        Err(FetchError::Transport(message)) => Err(message),
    }
}

impl Request {
    /// The same request over plain HTTP without credentials: upstream's
    /// fallback for an HTTPS hook served in plain HTTP.
    fn downgraded(&self) -> Request {
        let mut plain = self.without_header("authorization");
        plain.scheme = Scheme::Http;
        plain
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ExecAction, HTTPHeader, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use skiff_cri::Op;
    use skiff_cri::fake::FakeRuntime;
    use skiff_cri::v1::ExecSyncResponse;
    use tonic::Status;

    use super::super::http::tests::{Server, action, self_signed, target};
    use super::super::testutil::running_container;
    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("uid-1".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn exec(command: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(command.iter().map(|s| s.to_string()).collect()),
            }),
            ..LifecycleHandler::default()
        }
    }

    #[tokio::test]
    async fn exec_hooks_fail_on_non_zero_exit_with_upstreams_message() {
        let fake = FakeRuntime::new();
        let id = running_container(&fake).await;
        let target = ProbeTarget {
            pod_ip: None,
            container_id: id.clone(),
        };
        let handler = exec(&["sh", "-c", "exit 3"]);
        let timeout = Duration::from_secs(30);
        run_hook(&handler, &Container::default(), &target, &fake, timeout)
            .await
            .expect("exit 0 by default");
        let (request, deadline) = fake.exec_requests().pop().expect("exec");
        assert_eq!(
            (request.container_id.as_str(), request.timeout),
            (id.as_str(), 30)
        );
        assert_eq!(deadline, timeout);

        fake.push_exec_response(ExecSyncResponse {
            stdout: b"out\n".to_vec(),
            stderr: b"bad\n".to_vec(),
            exit_code: 3,
        });
        let err = run_hook(&handler, &Container::default(), &target, &fake, timeout)
            .await
            .expect_err("exit 3");
        assert_eq!(
            err.to_string(),
            "command 'sh -c exit 3' exited with 3: bad\n"
        );
        assert_eq!(
            err.event_message(&handler, "app", &pod()),
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"app\" in Pod \
             \"web_default(uid-1)\" failed - error: command 'sh -c exit 3' exited with 3: bad\n, \
             message: \"out\\nbad\\n\""
        );

        fake.fail_next(Op::ExecSync, Status::deadline_exceeded("late"));
        let err = run_hook(&handler, &Container::default(), &target, &fake, timeout)
            .await
            .expect_err("timed out");
        assert_eq!(err.to_string(), "command \"sh -c exit 3\" timed out");
    }

    #[tokio::test]
    async fn http_hooks_accept_any_response_and_fall_back_from_https() {
        let server = Server::start(|_, _| (500, Vec::new(), String::new())).await;
        let mut handler = LifecycleHandler {
            http_get: Some(action(server.port, "/hook")),
            ..LifecycleHandler::default()
        };
        let timeout = Duration::from_secs(5);
        let fake = FakeRuntime::new();
        run_hook(&handler, &Container::default(), &target(), &fake, timeout)
            .await
            .expect("a 500 is still a response");
        let head = server.heads().pop().expect("request").to_ascii_lowercase();
        assert!(
            head.contains("user-agent: kube-lifecycle/1.37\r\n"),
            "{head}"
        );

        // HTTPS to a plain server: retried over HTTP, without credentials.
        if let Some(get) = handler.http_get.as_mut() {
            get.scheme = Some("HTTPS".into());
            get.http_headers = Some(vec![HTTPHeader {
                name: "Authorization".into(),
                value: "Bearer secret".into(),
            }]);
        }
        run_hook(&handler, &Container::default(), &target(), &fake, timeout)
            .await
            .expect("fallback");
        let head = server
            .heads()
            .pop()
            .expect("retried request")
            .to_ascii_lowercase();
        assert!(!head.contains("authorization"), "{head}");

        let tls =
            Server::start_with(|_, _| (204, Vec::new(), String::new()), Some(self_signed())).await;
        if let Some(get) = handler.http_get.as_mut() {
            get.port =
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(tls.port));
        }
        run_hook(&handler, &Container::default(), &target(), &fake, timeout)
            .await
            .expect("https");
        let head = tls.heads().pop().expect("request").to_ascii_lowercase();
        assert!(head.contains("authorization: bearer secret"), "{head}");
    }

    #[tokio::test]
    async fn http_hooks_fail_without_a_response() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let handler = LifecycleHandler {
            http_get: Some(action(port, "/hook")),
            ..LifecycleHandler::default()
        };
        let err = run_hook(
            &handler,
            &Container::default(),
            &target(),
            &FakeRuntime::new(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("refused");
        assert_eq!(
            err.event_message(&handler, "app", &pod()),
            format!(
                "HTTP lifecycle hook (/hook) for Container \"app\" in Pod \"web_default(uid-1)\" \
                 failed - error: Get \"http://127.0.0.1:{port}/hook\": dial tcp 127.0.0.1:{port}: \
                 connect: connection refused"
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hooks_sleep_or_are_cut_short() {
        let fake = FakeRuntime::new();
        let handler = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 5 }),
            ..LifecycleHandler::default()
        };
        let start = tokio::time::Instant::now();
        run_hook(
            &handler,
            &Container::default(),
            &target(),
            &fake,
            Duration::from_secs(30),
        )
        .await
        .expect("slept");
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        let start = tokio::time::Instant::now();
        let err = run_hook(
            &handler,
            &Container::default(),
            &target(),
            &fake,
            Duration::from_secs(2),
        )
        .await
        .expect_err("cut short");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(
            err.event_message(&handler, "app", &pod()),
            "Sleep lifecycle hook (5) for Container \"app\" in Pod \"web_default(uid-1)\" failed \
             - error: container terminated before sleep hook finished"
        );

        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction::default()),
            ..LifecycleHandler::default()
        };
        let err = run_hook(
            &tcp,
            &Container::default(),
            &target(),
            &fake,
            Duration::from_secs(1),
        )
        .await
        .expect_err("not run");
        assert!(
            err.event_message(&tcp, "app", &pod())
                .starts_with("Cannot run handler: invalid handler: ")
        );
    }
}
