//! `skiff agent`: join a cluster as a node and run its pods.
//!
//! Data directory layout (`--data-dir`, default `/var/lib/skiff-agent`):
//!
//! ```text
//! DATA_DIR/
//!   ca.crt        the cluster CA, as verified against the join token
//!   agent/        containerd, pods, logs, airgap images (as under skiff server)
//! ```

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::AgentCommandArgs;
use crate::join::{self, JoinToken, ServingCertificate, ServingRequest};
use crate::pki;

/// The user agent of a node agent's requests: the field manager of its
/// writes is `kubelet`, as upstream's.
pub const KUBELET: &str = "kubelet";

/// Run the agent until SIGTERM or SIGINT.
pub fn run(args: AgentCommandArgs) -> anyhow::Result<()> {
    crate::server::create_private_dir(&args.data_dir)?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let token = JoinToken::parse(&args.token).context("--token")?;
    let ca_pem = match (&token.ca_hash, &args.ca_file) {
        (_, Some(file)) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        }
        (Some(hash), None) => join::fetch_ca(&args.server, hash)
            .with_context(|| format!("fetching the cluster CA from {}", args.server))?,
        (None, None) => anyhow::bail!(
            "the token carries no CA hash: pass --ca-file, or use the server's node-token"
        ),
    };
    pki::write_file_atomic(&data_dir.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
    if let Some(nodes) = args.hollow {
        return run_hollow(&args, &ca_pem, &token.bearer, nodes);
    }

    let node_name = crate::server::node_name(&args.agent)?;
    let node_ip = match args.agent.node_ip {
        Some(ip) => ip,
        None => default_node_ip()?,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::server::stop_on_signal(shutdown.clone()));
        let client = skiff_client::connect::with_token(
            &args.server,
            ca_pem.as_bytes(),
            &token.bearer,
            KUBELET,
        )
        .context("building the API client")?;
        let serving = request_serving_certificate(&client, &node_name, node_ip)
            .await
            .context("requesting the kubelet serving certificate")?;
        let options = skiff_agent::agent::AgentOptions {
            dir: data_dir.join("agent"),
            node_name,
            node_ip,
            container_runtime_endpoint: args.agent.container_runtime_endpoint.clone(),
            kubelet_listen: SocketAddr::new(args.bind_address, args.agent.kubelet_port),
            kubelet_cert_pem: serving.cert,
            kubelet_key_pem: serving.key,
            client_ca_pem: ca_pem,
            labels: Default::default(),
            cluster_dns: Some(crate::node_network::cluster_dns(&args.agent)),
            bridge: args.agent.bridge.clone(),
            cluster_cidr: crate::node_network::cluster_cidr(&args.cluster_cidr)?,
            provision_immediate: false,
        };
        eprintln!(
            "Skiff agent joining {} as node {}.",
            args.server, options.node_name
        );
        let node_name = options.node_name.clone();
        let network = crate::node_network::run(
            client.clone(),
            &args.agent,
            &node_name,
            node_ip,
            &args.cluster_cidr,
            shutdown.child_token(),
        );
        let agent = async {
            skiff_agent::agent::run(options, client.clone(), shutdown)
                .await
                .context("node agent")
        };
        tokio::try_join!(agent, network)?;
        Ok(())
    })
}

/// Runs `nodes` hollow (simulated) nodes instead of a real agent.
fn run_hollow(
    args: &AgentCommandArgs,
    ca_pem: &str,
    bearer: &str,
    nodes: usize,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::server::stop_on_signal(shutdown.clone()));
        let client =
            skiff_client::connect::with_token(&args.server, ca_pem.as_bytes(), bearer, KUBELET)
                .context("building the API client")?;
        let config = skiff_hollow::HollowConfig {
            nodes,
            name_prefix: args.hollow_prefix.clone(),
            ..skiff_hollow::HollowConfig::default()
        };
        eprintln!(
            "Skiff agent joining {} with {nodes} hollow (simulated) nodes {}-N.",
            args.server, args.hollow_prefix
        );
        skiff_hollow::run(client, config, shutdown)
            .await
            .context("hollow nodes")
    })
}

/// Asks the server to sign a serving certificate for this node's kubelet API.
async fn request_serving_certificate(
    client: &skiff_client::Client,
    node_name: &str,
    node_ip: IpAddr,
) -> anyhow::Result<ServingCertificate> {
    let mut addresses = vec![node_ip];
    for loopback in [IpAddr::from([127, 0, 0, 1])] {
        if !addresses.contains(&loopback) {
            addresses.push(loopback);
        }
    }
    let body = serde_json::to_vec(&ServingRequest {
        node_name: node_name.to_string(),
        addresses,
    })?;
    let request = http::Request::post(join::SERVING_KUBELET_PATH)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)?;
    // The server may still be starting: retry for a while.
    let mut attempts = 0;
    loop {
        match client.request::<ServingCertificate>(request.clone()).await {
            Ok(cert) => return Ok(cert),
            Err(e) if attempts < 30 => {
                attempts += 1;
                tracing::warn!(error = %e, "requesting the serving certificate; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The host's first non-loopback IPv4 address (else any non-loopback one).
fn default_node_ip() -> anyhow::Result<IpAddr> {
    let ips = pki::host_addresses()?;
    ips.iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .or_else(|| ips.iter().find(|ip| !ip.is_loopback()))
        .copied()
        .context("the host has no non-loopback address; pass --node-ip")
}
