//! Container probes (liveness, readiness, startup) and lifecycle hooks.
//!
//! Three layers, each usable on its own:
//!
//! - [`probe_once`] runs one attempt of a probe (`exec` through CRI
//!   `ExecSync`, `httpGet`, `tcpSocket`, `grpc`) and says what it found, with the
//!   message upstream's kubelet would put in the `Unhealthy` event.
//! - [`ProbeManager`] runs a worker per (container, probe kind) on the
//!   probe's schedule, applies the success/failure thresholds, keeps the
//!   current readiness and "started" state for the pod worker to read, and
//!   reports on a channel every attempt that did not plainly succeed and
//!   every change of state. Successful attempts that change nothing are not
//!   reported, so a healthy pod costs no channel traffic.
//! - [`run_hook`] runs a `postStart` / `preStop` handler (`exec`, `httpGet`,
//!   `sleep`).
//!
//! What the pod worker does with the results (restarting a container whose
//! liveness failed, the pod's `Ready` condition, events) is not decided
//! here: this module only observes.
//!
//! Upstream behaviour kept on purpose:
//!
//! - An HTTP probe succeeds on a status in `200..400`. Redirects are followed
//!   (at most 10) only while they stay on the same host name; a redirect
//!   elsewhere ends the probe with a [`ProbeOutcome::Warning`], which counts
//!   as success. At most 10 KiB of the body is read. TLS certificates are not
//!   verified.
//! - An attempt that could not be run at all ([`ProbeOutcome::Unknown`]: a
//!   port name that does not resolve, a runtime error) is retried up to three
//!   times and then reported, but never counts toward a threshold.
//! - A liveness or startup probe that crosses its failure threshold stops:
//!   the container is going to be restarted, and the restarted container gets
//!   fresh workers from [`ProbeManager::add_container`].

mod exec;
mod grpc;
mod hooks;
mod http;
mod manager;
mod net;

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_cri::RuntimeService;

pub use hooks::{HookError, run_hook};
pub use manager::{ProbeEvent, ProbeManager, ProbeUpdate};

/// The Kubernetes minor version the `User-Agent` of HTTP probes and hooks
/// names (`kube-probe/1.37`), as upstream's kubelet of that version does.
const KUBE_VERSION: &str = "1.37";

/// Upstream reads at most this much of an exec probe's output and of an HTTP
/// probe's body.
const MAX_OUTPUT: usize = 10 * 1024;

/// Which of a container's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `livenessProbe`: failure restarts the container.
    Liveness,
    /// `readinessProbe`: failure takes the pod out of service endpoints.
    Readiness,
    /// `startupProbe`: the other probes wait until it succeeds once.
    Startup,
}

impl ProbeKind {
    /// The name upstream uses in event messages ("Liveness probe failed: …").
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// This kind's probe in the container spec, if it has one.
    pub fn spec(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
            ProbeKind::Startup => container.startup_probe.as_ref(),
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one probe attempt found. Messages are upstream's, so events read
/// the same as on a kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The check passed.
    Success,
    /// The check passed with a caveat (an HTTP redirect to another host was
    /// not followed). Counts as success; upstream posts a `ProbeWarning`.
    Warning(String),
    /// The check ran and failed: a status outside `200..400`, a refused
    /// connection, a non-zero exit (the message is then the command's
    /// output), a timeout.
    Failure(String),
    /// The check could not be run (bad port, runtime error, unsupported
    /// handler). Never counts toward a threshold.
    Unknown(String),
}

impl ProbeOutcome {
    /// Whether the attempt counts as a success: [`Success`](Self::Success)
    /// or [`Warning`](Self::Warning); `None` for [`Unknown`](Self::Unknown).
    pub fn passed(&self) -> Option<bool> {
        match self {
            ProbeOutcome::Success | ProbeOutcome::Warning(_) => Some(true),
            ProbeOutcome::Failure(_) => Some(false),
            ProbeOutcome::Unknown(_) => None,
        }
    }
}

/// Where a container's probes and hooks connect and exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The pod's IP: the host of `httpGet` and `tcpSocket` handlers that
    /// name none. `None` before the sandbox has an address (or for a
    /// host-network pod whose node IP is unknown); such probes are then
    /// [`ProbeOutcome::Unknown`].
    pub pod_ip: Option<IpAddr>,
    /// The CRI id of the container that `exec` handlers run in.
    pub container_id: String,
}

/// Runs one attempt of `probe` against `container`.
///
/// `exec` goes through `runtime.exec_sync` with the probe's timeout on both
/// sides; `httpGet`, `tcpSocket` and `grpc` connect from the node (`grpc`
/// always to the pod IP: the handler has no `host`).
pub async fn probe_once(
    probe: &Probe,
    container: &Container,
    target: &ProbeTarget,
    runtime: &dyn RuntimeService,
) -> ProbeOutcome {
    let timeout = manager::Schedule::of(probe).timeout;
    if let Some(action) = &probe.exec {
        let command = expand_static(action.command.as_deref().unwrap_or_default(), container);
        exec::probe(runtime, &target.container_id, command, timeout).await
    } else if let Some(action) = &probe.http_get {
        http::probe(action, container, target, timeout).await
    } else if let Some(action) = &probe.tcp_socket {
        let host = match action.host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => host.to_owned(),
            None => match target.pod_ip {
                Some(ip) => ip.to_string(),
                None => return ProbeOutcome::Unknown(NO_POD_IP.to_owned()),
            },
        };
        match resolve_port(&action.port, container) {
            Ok(port) => net::probe_tcp(&host, port, timeout).await,
            Err(message) => ProbeOutcome::Unknown(message),
        }
    } else if let Some(action) = &probe.grpc {
        // `mode: TLS` is behind upstream's alpha `GRPCContainerProbeTLS`
        // gate; plaintext is the default and the only mode served here.
        if let Some(mode) = action.mode.as_deref().filter(|m| *m != "Plaintext") {
            return ProbeOutcome::Unknown(format!(
                "gRPC probe mode {mode:?} is not supported by this node"
            ));
        }
        let Some(ip) = target.pod_ip else {
            return ProbeOutcome::Unknown(NO_POD_IP.to_owned());
        };
        match u16::try_from(action.port).ok().filter(|p| *p > 0) {
            Some(port) => {
                let service = action.service.as_deref().unwrap_or_default();
                grpc::probe(ip, port, service, timeout).await
            }
            None => ProbeOutcome::Unknown(format!("invalid port number: {}", action.port)),
        }
    } else {
        ProbeOutcome::Unknown(format!(
            "missing probe handler for container {:?}",
            container.name
        ))
    }
}

/// Why a network handler with no `host` cannot run.
const NO_POD_IP: &str = "pod has no IP address to connect to";

/// Turns a handler's port (a number, a container port's name, or a number
/// written as a string) into a port number, with upstream's error texts.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match named {
                Some(n) => n,
                None => name
                    .parse::<i64>()
                    .map_err(|_| format!("strconv.Atoi: parsing {name:?}: invalid syntax"))?,
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// Expands `$(VAR)` in an exec probe's command from the container's literal
/// `env` values only (upstream's `ExpandContainerCommandOnlyStatic`): `$$` is
/// a literal `$`, and a reference to an undefined variable stays as written.
/// Variables set from a source (`valueFrom`) expand to the empty string, as
/// upstream's map of static values has them empty.
fn expand_static(command: &[String], container: &Container) -> Vec<String> {
    let env: HashMap<&str, &str> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
        .collect();
    command.iter().map(|arg| expand(arg, &env)).collect()
}

fn expand(input: &str, env: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|r| r.split_once(')')) {
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `host:port`, with brackets around an IPv6 address (Go's `JoinHostPort`).
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Cuts `text` to at most [`MAX_OUTPUT`] bytes, on a character boundary.
fn truncate_output(mut text: String) -> String {
    if text.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Helpers shared by the tests of this module's parts.
#[cfg(test)]
mod testutil {
    use skiff_cri::RuntimeService;
    use skiff_cri::fake::FakeRuntime;
    use skiff_cri::v1::{
        ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, PodSandboxConfig,
        PodSandboxMetadata, RunPodSandboxRequest, StartContainerRequest,
    };

    /// Starts a container `app` in a fresh sandbox of `fake` and returns
    /// its id.
    pub async fn running_container(fake: &FakeRuntime) -> String {
        fake.add_image("busybox");
        let sandbox = fake
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: "web".into(),
                        namespace: "default".into(),
                        uid: "uid-1".into(),
                        attempt: 0,
                    }),
                    ..PodSandboxConfig::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .expect("sandbox")
            .pod_sandbox_id;
        let id = fake
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox,
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: "busybox".into(),
                        ..ImageSpec::default()
                    }),
                    ..ContainerConfig::default()
                }),
                sandbox_config: None,
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
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, EnvVarSource, ExecAction, GRPCAction};
    use skiff_cri::fake::FakeRuntime;

    use super::*;

    fn container_with_ports() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }
    }

    #[test]
    fn ports_resolve_by_number_name_or_numeric_string() {
        let c = container_with_ports();
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("9090".into()), &c),
            Ok(9090)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("metrics".into()), &c),
            Err("strconv.Atoi: parsing \"metrics\": invalid syntax".into())
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(0), &c),
            Err("invalid port number: 0".into())
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(70000), &c),
            Err("invalid port number: 70000".into())
        );
    }

    #[test]
    fn commands_expand_only_static_env() {
        let c = Container {
            env: Some(vec![
                EnvVar {
                    name: "FILE".into(),
                    value: Some("/tmp/healthy".into()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "SECRET".into(),
                    value_from: Some(EnvVarSource::default()),
                    ..EnvVar::default()
                },
            ]),
            ..Container::default()
        };
        let command = ["cat $(FILE)", "$(SECRET)|$(MISSING)|$$(FILE)|$x|$(open"].map(String::from);
        assert_eq!(
            expand_static(&command, &c),
            ["cat /tmp/healthy", "|$(MISSING)|$(FILE)|$x|$(open"]
        );
    }

    #[test]
    fn output_is_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_OUTPUT);
        let cut = truncate_output(long);
        assert!(cut.len() <= MAX_OUTPUT);
        assert!(cut.len() >= MAX_OUTPUT - 1);
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
    }

    #[tokio::test]
    async fn probes_without_a_usable_handler_are_unknown() {
        let runtime = FakeRuntime::new();
        let target = ProbeTarget {
            pod_ip: None,
            container_id: "c1".into(),
        };
        let c = container_with_ports();
        let empty = Probe::default();
        assert!(matches!(
            probe_once(&empty, &c, &target, &runtime).await,
            ProbeOutcome::Unknown(m) if m.contains("missing probe handler")
        ));
        let grpc = Probe {
            grpc: Some(GRPCAction {
                mode: None,
                port: 9000,
                service: None,
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_once(&grpc, &c, &target, &runtime).await,
            ProbeOutcome::Unknown(NO_POD_IP.into())
        );
        let with_ip = ProbeTarget {
            pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
            ..target.clone()
        };
        let bad_port = Probe {
            grpc: Some(GRPCAction {
                mode: None,
                port: 0,
                service: None,
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_once(&bad_port, &c, &with_ip, &runtime).await,
            ProbeOutcome::Unknown("invalid port number: 0".into())
        );
        let tls = Probe {
            grpc: Some(GRPCAction {
                mode: Some("TLS".into()),
                port: 9000,
                service: None,
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_once(&tls, &c, &with_ip, &runtime).await,
            ProbeOutcome::Unknown("gRPC probe mode \"TLS\" is not supported by this node".into())
        );
        let tcp = Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(80),
                ..Default::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_once(&tcp, &c, &target, &runtime).await,
            ProbeOutcome::Unknown(NO_POD_IP.into())
        );
        // An exec probe in a container the runtime does not know.
        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Probe::default()
        };
        assert!(matches!(
            probe_once(&exec, &c, &target, &runtime).await,
            ProbeOutcome::Unknown(m) if m.contains("ExecSync")
        ));
    }
}
