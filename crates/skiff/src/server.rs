//! `skiff server`: prepare the data directory (PKI, token, kubeconfig), open the
//! embedded store and serve the Kubernetes API until SIGTERM or SIGINT.
//!
//! Data directory layout:
//!
//! ```text
//! DATA_DIR/
//!   tls/          ca.crt ca.key server.crt server.key admin.crt admin.key
//!                 service.key (signs service account tokens)
//!   token         bootstrap token for agents
//!   node-token    join token for `skiff agent --token` (CA hash + bootstrap token)
//!   kubeconfig    admin kubeconfig, rewritten on every start (the port may change)
//!   db/skiff.redb the embedded store
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use skiff_client::leader::LeaderElectionConfig;
use skiff_controllers::manager::ControllerManagerConfig;
use skiff_controllers::node_ipam::NodeIpamConfig;
use skiff_controllers::node_lifecycle::NodeLifecycleConfig;
use skiff_controllers::service_lb::ServiceLbConfig;
use skiff_controllers::serviceaccount::RootCaConfig;
use tokio_util::sync::CancellationToken;

use crate::cli::{Component, ServerArgs};
use crate::pki::{self, ServingNames};
use crate::{kubeconfig, tls, token};

/// Run the server until it is told to stop.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    create_private_dir(&args.data_dir)?;
    // Absolute, so that the printed KUBECONFIG path works from any directory.
    let data_dir = &args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;

    let host_ips = pki::host_addresses()?;
    let extra_sans: Vec<IpAddr> = args.advertise_address.into_iter().collect();
    let names = ServingNames::for_host(pki::hostname().as_deref(), &host_ips, &extra_sans);
    let pki = pki::ensure(&data_dir.join("tls"), &names)?;
    let service_account_key = skiff_apiserver::service_account::SigningKey::load_or_create(
        &data_dir.join("tls/service.key"),
    )?;
    let bootstrap_token = token::ensure(&data_dir.join("token"))?;
    let node_token = crate::join::node_token(&pki.ca_cert, &bootstrap_token);
    pki::write_file_atomic(
        &data_dir.join("node-token"),
        format!("{node_token}\n").as_bytes(),
        0o600,
    )?;

    let listen = SocketAddr::new(args.bind_address, args.https_port);
    let url = format!("https://{}", local_address(listen));
    let kubeconfig_path = data_dir.join("kubeconfig");
    let config = kubeconfig::render(&url, &pki).context("rendering the admin kubeconfig")?;
    pki::write_file_atomic(&kubeconfig_path, config.as_bytes(), 0o600)?;

    let tls = tls::server_config(&pki)?;

    let db_dir = data_dir.join("db");
    create_private_dir(&db_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let advertise = SocketAddr::new(
        advertise_ip(args.advertise_address, args.bind_address, &host_ips),
        args.https_port,
    );
    let db_path = db_dir.join("skiff.redb");

    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));

        // Opening may repair a file left by a crash, which takes a while: keep
        // it off the async worker threads.
        let opened = tokio::task::spawn_blocking({
            let db_path = db_path.clone();
            move || skiff_store::EmbeddedStore::open(&db_path)
        })
        .await
        .context("opening the store")?;
        let store: Arc<dyn skiff_store::Store> = Arc::new(
            opened.with_context(|| format!("opening the store at {}", db_path.display()))?,
        );

        let compactor = (!args.compaction_interval.is_zero()).then(|| {
            skiff_store::spawn_compactor(
                store.clone(),
                args.compaction_interval,
                args.compaction_keep_revisions,
                shutdown.child_token(),
            )
        });

        eprintln!(
            "Skiff API server starting on https://{listen} (advertised as {advertise}).\n\
             To use it with kubectl:\n    export KUBECONFIG={}",
            kubeconfig_path.display()
        );
        let options = skiff_apiserver::ServerOptions {
            listen,
            tls,
            store,
            advertise,
            // Agents will join with the bootstrap token.
            bearer_tokens: vec![bootstrap_token],
            service_accounts: Some(
                skiff_apiserver::service_account::ServiceAccountOptions::new(service_account_key),
            ),
            kubelet_client: Some(skiff_apiserver::node_proxy::KubeletClientTls {
                ca_pem: pki.ca_cert.clone(),
                cert_pem: pki.kubelet_client_cert.clone(),
                key_pem: pki.kubelet_client_key.clone(),
            }),
            extra_routes: Some(crate::join::routes(std::sync::Arc::new(pki.clone()))),
        };
        let api = skiff_apiserver::ApiServer::start(options, shutdown.clone())
            .await
            .context("starting the API server")?;
        let components = Components {
            args: &args,
            data_dir,
            api: api.local_router(),
            pki: &pki,
            node_ip: args.agent.node_ip.unwrap_or(advertise.ip()),
        };
        let (served, components) = tokio::join!(
            api.serve(shutdown.clone()),
            components.run(shutdown.clone()),
        );
        shutdown.cancel();
        components?;
        // The compactor finishes a compaction in progress and stops. A panic in
        // it was already reported and must not mask how serving ended.
        if let Some(compactor) = compactor {
            let _ = compactor.await;
        }
        served.context("serving the API")
    })
}

/// A client whose requests `router` serves in this process, naming
/// `user_agent` (from which the server derives the field manager of its
/// writes, as upstream's components are `kube-scheduler`, `kubelet`...).
fn in_process_client(router: axum::Router, user_agent: &'static str) -> skiff_client::Client {
    let service = tower::service_fn(
        move |mut request: http::Request<skiff_client::kube::client::Body>| {
            request.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(user_agent),
            );
            tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
        },
    );
    skiff_client::Client::new(service, "default")
}

/// What runs beside the API server and talks to it through the API: the
/// scheduler, the controllers and, unless disabled, the local node agent.
struct Components<'a> {
    args: &'a ServerArgs,
    data_dir: &'a Path,
    /// The API server's routes, served in this process.
    api: axum::Router,
    pki: &'a pki::Pki,
    node_ip: IpAddr,
}

impl Components<'_> {
    /// Runs until `shutdown`; a component that fails stops the server.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let result = self.run_inner(&shutdown).await;
        if result.is_err() {
            shutdown.cancel();
        }
        result
    }

    async fn run_inner(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let client = |user_agent| in_process_client(self.api.clone(), user_agent);
        let cluster_cidr = self
            .args
            .cluster_cidr
            .parse()
            .map_err(|e| anyhow::anyhow!("--cluster-cidr {}: {e}", self.args.cluster_cidr))?;
        let identity = leader_identity();
        let controllers_client = client("kube-controller-manager");
        let controllers = skiff_client::leader::run_as_leader(
            controllers_client.clone(),
            LeaderElectionConfig::new("kube-controller-manager", &identity),
            shutdown.child_token(),
            |token| {
                skiff_controllers::manager::run(
                    controllers_client.clone(),
                    ControllerManagerConfig {
                        node_ipam: NodeIpamConfig {
                            cluster_cidr,
                            ..Default::default()
                        },
                        node_lifecycle: NodeLifecycleConfig {
                            node_monitor_grace_period: std::time::Duration::from_secs(
                                self.args.node_monitor_grace_period,
                            ),
                            ..Default::default()
                        },
                        root_ca: Some(RootCaConfig {
                            ca_pem: self.pki.ca_cert.clone(),
                        }),
                        service_lb: ServiceLbConfig {
                            enabled: !self.args.disable.contains(&Component::Servicelb),
                        },
                        ..Default::default()
                    },
                    token,
                )
            },
        );
        let scheduler_client = client("kube-scheduler");
        let scheduler = skiff_client::leader::run_as_leader(
            scheduler_client.clone(),
            LeaderElectionConfig::new("kube-scheduler", &identity),
            shutdown.child_token(),
            |token| {
                skiff_scheduler::run(
                    scheduler_client.clone(),
                    skiff_scheduler::SchedulerConfig::default(),
                    token,
                )
            },
        );
        let agent = async {
            if self.args.disable_agent {
                return Ok(());
            }
            let options = self.agent_options()?;
            let node_name = options.node_name.clone();
            let kubelet = client(crate::agent::KUBELET);
            let network = crate::node_network::run(
                kubelet.clone(),
                &self.args.agent,
                &node_name,
                self.node_ip,
                &self.args.cluster_cidr,
                shutdown.child_token(),
            );
            let agent = async {
                skiff_agent::agent::run(options, kubelet.clone(), shutdown.child_token())
                    .await
                    .context("node agent")
            };
            let ingress_client = client("skiff-ingress");
            tokio::try_join!(agent, network, self.ingress(&ingress_client, shutdown))?;
            Ok(())
        };
        let dns_client = client("skiff-dns");
        // The first failure ends the others (and `run` stops the server).
        tokio::try_join!(
            async { controllers.await?.transpose().context("controller manager") },
            async { scheduler.await?.transpose().context("scheduler") },
            agent,
            self.dns(&dns_client, shutdown),
        )?;
        Ok(())
    }

    /// The cluster DNS server on this host, published as the endpoint of the
    /// `kube-dns` Service (unless disabled).
    async fn dns(
        &self,
        client: &skiff_client::Client,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        if self.args.disable.contains(&Component::Dns) {
            return Ok(());
        }
        let agent = &self.args.agent;
        let node_name = if self.args.disable_agent {
            None
        } else {
            Some(node_name(agent)?)
        };
        let config = skiff_dns::DnsConfig {
            // The node IP, not every address: a UDP reply must leave from
            // the address the proxy redirected the query to, or conntrack
            // cannot undo the DNAT and the pod drops it.
            listen: SocketAddr::new(self.node_ip, self.args.cluster_dns_port),
            cluster_domain: agent.cluster_domain.clone(),
            service_ip: agent.cluster_dns,
            pod_cidrs: vec![
                self.args
                    .cluster_cidr
                    .parse()
                    .with_context(|| format!("--cluster-cidr {}", self.args.cluster_cidr))?,
            ],
            publish: Some(skiff_dns::PublishEndpoint {
                node_ip: self.node_ip,
                node_name,
            }),
            ..Default::default()
        };
        skiff_dns::run(client.clone(), config, shutdown.child_token())
            .await
            .context("cluster DNS")
    }

    /// The ingress controller, serving on this node (unless disabled).
    async fn ingress(
        &self,
        client: &skiff_client::Client,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        if self.args.disable.contains(&Component::Ingress) {
            return Ok(());
        }
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let config = skiff_ingress::IngressConfig {
            http_address: SocketAddr::new(any, self.args.ingress_http_port),
            https_address: SocketAddr::new(any, self.args.ingress_https_port),
            status_addresses: vec![self.node_ip],
            ..Default::default()
        };
        skiff_ingress::run(client.clone(), config, shutdown.child_token())
            .await
            .context("ingress controller")
    }

    fn agent_options(&self) -> anyhow::Result<skiff_agent::agent::AgentOptions> {
        let agent = &self.args.agent;
        let node_name = node_name(agent)?;
        Ok(skiff_agent::agent::AgentOptions {
            dir: self.data_dir.join("agent"),
            node_name,
            node_ip: self.node_ip,
            container_runtime_endpoint: agent.container_runtime_endpoint.clone(),
            kubelet_listen: SocketAddr::new(self.args.bind_address, agent.kubelet_port),
            kubelet_cert_pem: self.pki.kubelet_serving_cert.clone(),
            kubelet_key_pem: self.pki.kubelet_serving_key.clone(),
            client_ca_pem: self.pki.ca_cert.clone(),
            labels: [(
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            )]
            .into(),
            cluster_dns: Some(crate::node_network::cluster_dns(agent)),
            bridge: agent.bridge.clone(),
            cluster_cidr: crate::node_network::cluster_cidr(&self.args.cluster_cidr)?,
            provision_immediate: true,
        })
    }
}

/// `--node-name`, else the host name in lower case (as upstream's kubelet
/// names its node).
/// Who this server is in leader elections: its host name and a random
/// suffix, so a restarted server is a new candidate (as upstream's
/// `hostname_uuid`).
fn leader_identity() -> String {
    use std::hash::{BuildHasher, RandomState};
    let host = pki::hostname().unwrap_or_else(|| "skiff".into());
    let suffix = RandomState::new().hash_one(std::process::id());
    format!("{host}_{suffix:016x}")
}

pub(crate) fn node_name(agent: &crate::cli::AgentArgs) -> anyhow::Result<String> {
    match &agent.node_name {
        Some(name) => Ok(name.clone()),
        None => pki::hostname()
            .map(|host| host.to_lowercase())
            .context("cannot read the host name; pass --node-name"),
    }
}

/// `skiff killall`: stop the pods of the agent under `data_dir` and remove
/// the node's Service and NetworkPolicy rules.
pub fn killall(data_dir: &Path) -> anyhow::Result<()> {
    let agent_dir = data_dir.join("agent");
    if !agent_dir.exists() {
        return Ok(());
    }
    crate::node_network::remove_tables()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(skiff_agent::agent::killall(&agent_dir))
        .with_context(|| format!("stopping the pods under {}", agent_dir.display()))
}

/// Cancel `shutdown` on the first SIGTERM or SIGINT; exit at once on a second,
/// for an operator who does not want to wait for in-flight requests.
pub(crate) async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};

    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down (send the signal again to exit immediately)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without waiting");
    std::process::exit(1);
}

/// The address local clients should use to reach a server listening on
/// `listen`: loopback when it listens on every address.
fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The address to advertise: the flag, else a specific bind address, else the
/// host's first non-loopback address (IPv4 preferred, as upstream prefers the
/// default route's), else loopback.
fn advertise_ip(flag: Option<IpAddr>, bind: IpAddr, host_ips: &[IpAddr]) -> IpAddr {
    if let Some(ip) = flag {
        return ip;
    }
    if !bind.is_unspecified() {
        return bind;
    }
    let usable = |ip: &&IpAddr| !ip.is_loopback() && !ip.is_unspecified();
    host_ips
        .iter()
        .filter(usable)
        .find(|ip| ip.is_ipv4())
        .or_else(|| host_ips.iter().find(usable))
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Create `dir` (and parents) readable only by its owner: it holds keys.
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_ip_choice() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let any = ip("0.0.0.0");
        let host = [ip("127.0.0.1"), ip("fd00::5"), ip("10.0.0.7")];
        assert_eq!(advertise_ip(Some(ip("1.2.3.4")), any, &host), ip("1.2.3.4"));
        assert_eq!(advertise_ip(None, ip("10.9.9.9"), &host), ip("10.9.9.9"));
        assert_eq!(advertise_ip(None, any, &host), ip("10.0.0.7"));
        assert_eq!(advertise_ip(None, any, &host[..2]), ip("fd00::5"));
        assert_eq!(advertise_ip(None, any, &host[..1]), ip("127.0.0.1"));
    }

    #[test]
    fn local_address_prefers_loopback_for_wildcards() {
        let cases = [
            ("0.0.0.0:6443", "127.0.0.1:6443"),
            ("[::]:6443", "[::1]:6443"),
            ("10.0.0.5:7443", "10.0.0.5:7443"),
            ("[fd00::1]:6443", "[fd00::1]:6443"),
        ];
        for (listen, want) in cases {
            let got = local_address(listen.parse().unwrap());
            assert_eq!(got.to_string(), want);
        }
    }
}
