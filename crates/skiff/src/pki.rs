//! The cluster's PKI: a CA, the API server's serving certificate and an admin
//! client certificate, kept as PEM files in `DATA_DIR/tls/`.
//!
//! Everything is generated on the first start and reused on every later start,
//! because clients (kubeconfigs handed out, agents that joined) pin the CA: a
//! regenerated CA would lock them all out. Files are written key first, then
//! certificate, each atomically, so a crash mid-generation leaves at worst a key
//! without its certificate, which the next start replaces. A certificate without
//! its key can only come from someone deleting files, and is refused.
//!
//! Keys are ECDSA P-256 (rcgen's default), which Go, Python and rustls clients all
//! accept.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// File names inside `DATA_DIR/tls/`.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// The API server's serving certificate.
pub const SERVER_CERT: &str = "server.crt";
/// The serving certificate's key.
pub const SERVER_KEY: &str = "server.key";
/// The admin client certificate (`CN=system:admin`, `O=system:masters`).
pub const ADMIN_CERT: &str = "admin.crt";
/// The admin client certificate's key.
pub const ADMIN_KEY: &str = "admin.key";
/// The client certificate the API server presents to node agents.
pub const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client.crt";
/// Its key.
pub const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";
/// The local node agent's serving certificate (its kubelet API).
pub const KUBELET_SERVING_CERT: &str = "kubelet.crt";
/// Its key.
pub const KUBELET_SERVING_KEY: &str = "kubelet.key";

/// The admin identity: upstream's superuser group binds `system:masters` to
/// `cluster-admin`.
const ADMIN_USER: &str = "system:admin";
const ADMIN_GROUP: &str = "system:masters";

/// How long certificates are valid. There is no rotation yet, so leaf
/// certificates live as long as the CA rather than the year upstream uses.
const VALIDITY_DAYS: i64 = 3650;

/// The DNS names every API server answers to inside a cluster.
const IN_CLUSTER_NAMES: [&str; 4] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The cluster's certificates and keys, PEM encoded.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA certificate.
    pub ca_cert: String,
    /// The cluster CA's key, for certificates issued to joining nodes.
    pub ca_key: String,
    /// The serving certificate (signed by the CA).
    pub server_cert: String,
    /// The serving certificate's key.
    pub server_key: String,
    /// The admin client certificate (signed by the CA).
    pub admin_cert: String,
    /// The admin client certificate's key.
    pub admin_key: String,
    /// The API server's client certificate for node agents' kubelet API.
    pub kubelet_client_cert: String,
    /// Its key.
    pub kubelet_client_key: String,
    /// The local node agent's serving certificate (same names as the API
    /// server's: it runs on the same host).
    pub kubelet_serving_cert: String,
    /// Its key.
    pub kubelet_serving_key: String,
}

/// The names and addresses the serving certificate must cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// Loopback, the in-cluster `kubernetes.*` names and the `kubernetes`
    /// Service's ClusterIP (what in-cluster clients dial), the host name,
    /// every address of the host's interfaces and any extra addresses (the
    /// advertise address), without duplicates.
    pub fn for_host(hostname: Option<&str>, host_ips: &[IpAddr], extra: &[IpAddr]) -> Self {
        let mut names = ServingNames::default();
        names.add_dns("localhost");
        if let Some(host) = hostname {
            names.add_dns(host);
        }
        for name in IN_CLUSTER_NAMES {
            names.add_dns(name);
        }
        let fixed = [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            IpAddr::V4(skiff_apiserver::services::API_SERVICE_IP),
        ];
        for ip in fixed.iter().chain(host_ips).chain(extra) {
            if !names.ips.contains(ip) {
                names.ips.push(*ip);
            }
        }
        names
    }

    /// One line per name, what a certificate made for these names records
    /// beside it so that a change of names is noticed.
    fn record(&self) -> String {
        let ips = self.ips.iter().map(ToString::to_string);
        self.dns
            .iter()
            .cloned()
            .chain(ips)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    fn add_dns(&mut self, name: &str) {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !self.dns.contains(&name) {
            self.dns.push(name);
        }
    }

    fn san_types(&self) -> anyhow::Result<Vec<SanType>> {
        let mut sans = Vec::with_capacity(self.dns.len() + self.ips.len());
        for name in &self.dns {
            let name = name
                .clone()
                .try_into()
                .with_context(|| format!("{name:?} is not a valid DNS name"))?;
            sans.push(SanType::DnsName(name));
        }
        sans.extend(self.ips.iter().copied().map(SanType::IpAddress));
        Ok(sans)
    }
}

/// The host's name from the kernel, if it has one.
pub fn hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Every address of the host's interfaces (link-local IPv6 excluded: it is
/// meaningless without a zone and cannot go in a certificate usefully).
pub fn host_addresses() -> anyhow::Result<Vec<IpAddr>> {
    let interfaces = if_addrs::get_if_addrs().context("listing network interfaces")?;
    Ok(interfaces.into_iter().map(|i| i.ip()).collect())
}

/// Load the PKI from `dir`, generating whatever is missing. Existing
/// certificates are never replaced while their CA is kept.
pub fn ensure(dir: &Path, names: &ServingNames) -> anyhow::Result<Pki> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = OffsetDateTime::now_utc();

    let (ca_key, ca_cert, ca_is_new) = match load_pair(dir, CA_CERT, CA_KEY)? {
        Some((cert, key)) => (key, cert, false),
        None => {
            for leaf in [
                SERVER_CERT,
                ADMIN_CERT,
                KUBELET_CLIENT_CERT,
                KUBELET_SERVING_CERT,
            ] {
                if dir.join(leaf).exists() {
                    bail!(
                        "{} exists but the CA that signed it is missing; \
                         remove {} to generate a new PKI",
                        dir.join(leaf).display(),
                        dir.display()
                    );
                }
            }
            let key = KeyPair::generate().context("generating the CA key")?;
            let cert = ca_params(now)
                .self_signed(&key)
                .context("self-signing the CA certificate")?;
            let key_pem = key.serialize_pem();
            write_pair(dir, CA_CERT, &cert.pem(), CA_KEY, &key_pem)?;
            (key_pem, cert.pem(), true)
        }
    };
    let ca_signing_key = KeyPair::from_pem(&ca_key)
        .with_context(|| format!("parsing {}", dir.join(CA_KEY).display()))?;
    // The issuer needs only the CA's subject, key-id method and key usages, all
    // of which `ca_params` reproduces exactly; no certificate parsing needed.
    let issuer = Issuer::new(ca_params(now), ca_signing_key);

    let server = ensure_leaf(
        dir,
        SERVER_CERT,
        SERVER_KEY,
        ca_is_new,
        Some(names),
        || {
            let mut params = CertificateParams::default();
            params.subject_alt_names = names.san_types()?;
            params.distinguished_name = distinguished_name("kube-apiserver", None);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            Ok(leaf_params(params, now))
        },
        &issuer,
    )?;
    let admin = ensure_leaf(
        dir,
        ADMIN_CERT,
        ADMIN_KEY,
        ca_is_new,
        None,
        || {
            let mut params = CertificateParams::default();
            params.distinguished_name = distinguished_name(ADMIN_USER, Some(ADMIN_GROUP));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            Ok(leaf_params(params, now))
        },
        &issuer,
    )?;

    let kubelet_client = ensure_leaf(
        dir,
        KUBELET_CLIENT_CERT,
        KUBELET_CLIENT_KEY,
        ca_is_new,
        None,
        || {
            let mut params = CertificateParams::default();
            params.distinguished_name =
                distinguished_name("kube-apiserver-kubelet-client", Some(ADMIN_GROUP));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            Ok(leaf_params(params, now))
        },
        &issuer,
    )?;
    let kubelet_serving = ensure_leaf(
        dir,
        KUBELET_SERVING_CERT,
        KUBELET_SERVING_KEY,
        ca_is_new,
        Some(names),
        || {
            let mut params = CertificateParams::default();
            params.subject_alt_names = names.san_types()?;
            params.distinguished_name = distinguished_name("kubelet", None);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            Ok(leaf_params(params, now))
        },
        &issuer,
    )?;

    Ok(Pki {
        ca_key: ca_key.clone(),
        kubelet_client_cert: kubelet_client.0,
        kubelet_client_key: kubelet_client.1,
        kubelet_serving_cert: kubelet_serving.0,
        kubelet_serving_key: kubelet_serving.1,
        ca_cert,
        server_cert: server.0,
        server_key: server.1,
        admin_cert: admin.0,
        admin_key: admin.1,
    })
}

impl Pki {
    /// A serving certificate and key for a node agent's kubelet API, for the
    /// node's name and addresses, signed by the cluster CA (the API server
    /// checks it when it proxies logs and exec to the node).
    pub fn issue_kubelet_serving(
        &self,
        node_name: &str,
        ips: &[IpAddr],
    ) -> anyhow::Result<(String, String)> {
        let now = OffsetDateTime::now_utc();
        let ca_signing_key = KeyPair::from_pem(&self.ca_key).context("parsing the CA key")?;
        let issuer = Issuer::new(ca_params(now), ca_signing_key);
        let mut params = CertificateParams::default();
        let names = ServingNames {
            dns: vec![node_name.to_string()],
            ips: ips.to_vec(),
        };
        params.subject_alt_names = names.san_types()?;
        params.distinguished_name = distinguished_name(&format!("system:node:{node_name}"), None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("generating a kubelet serving key")?;
        let cert = leaf_params(params, now)
            .signed_by(&key, &issuer)
            .context("signing a kubelet serving certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The CA's parameters. Deterministic apart from the validity window, which the
/// issuer ignores, so they can stand in for the CA certificate when signing.
fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name("skiff-ca", None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(VALIDITY_DAYS);
    params
}

fn leaf_params(mut params: CertificateParams, now: OffsetDateTime) -> CertificateParams {
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    // Tolerate small clock skew between the server and its clients.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(VALIDITY_DAYS);
    params
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// Return `(cert_pem, key_pem)` for a leaf, generating and signing it unless it
/// exists, its CA was kept and, for a serving certificate, it was made for
/// the same `names` (recorded in `<cert_file>.names`), as k3s regenerates
/// its serving certificate when the host's addresses change.
fn ensure_leaf(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    ca_is_new: bool,
    names: Option<&ServingNames>,
    params: impl FnOnce() -> anyhow::Result<CertificateParams>,
    issuer: &Issuer<'_, KeyPair>,
) -> anyhow::Result<(String, String)> {
    let record_path = dir.join(format!("{cert_file}.names"));
    let same_names = match names {
        None => true,
        Some(names) => read_optional(&record_path)?.is_some_and(|r| r == names.record()),
    };
    if !ca_is_new
        && same_names
        && let Some(pair) = load_pair(dir, cert_file, key_file)?
    {
        return Ok(pair);
    }
    let key = KeyPair::generate().with_context(|| format!("generating {key_file}"))?;
    let cert = params()?
        .signed_by(&key, issuer)
        .with_context(|| format!("signing {cert_file}"))?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    write_pair(dir, cert_file, &cert_pem, key_file, &key_pem)?;
    if let Some(names) = names {
        write_file_atomic(&record_path, names.record().as_bytes(), 0o644)?;
    }
    Ok((cert_pem, key_pem))
}

/// Read a certificate and its key. `None` if the certificate is absent (a lone
/// key is a leftover of an interrupted generation); an error if the key is.
fn load_pair(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    let Some(cert) = read_optional(&cert_path)? else {
        return Ok(None);
    };
    let Some(key) = read_optional(&key_path)? else {
        bail!(
            "{} exists but its key {} is missing",
            cert_path.display(),
            key_path.display()
        );
    };
    Ok(Some((cert, key)))
}

fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_pair(
    dir: &Path,
    cert_file: &str,
    cert_pem: &str,
    key_file: &str,
    key_pem: &str,
) -> anyhow::Result<()> {
    write_file_atomic(&dir.join(key_file), key_pem.as_bytes(), 0o600)?;
    write_file_atomic(&dir.join(cert_file), cert_pem.as_bytes(), 0o644)
}

/// Write `contents` to `path` so that readers see the old file or the whole new
/// one: a temporary file with `mode`, fsynced, renamed over `path`, and the
/// directory fsynced so the rename itself survives a crash.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        dir.join(name)
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::*;

    fn names() -> ServingNames {
        ServingNames::for_host(Some("node-a"), &[IpAddr::from([10, 1, 2, 3])], &[])
    }

    #[test]
    fn serving_names_cover_loopback_cluster_names_and_host() {
        let n = ServingNames::for_host(
            Some("Node-A"),
            &[IpAddr::from([127, 0, 0, 1]), IpAddr::from([10, 1, 2, 3])],
            &[IpAddr::from([192, 168, 9, 9])],
        );
        assert_eq!(
            n.dns,
            [
                "localhost",
                "node-a",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local"
            ]
        );
        let ips: Vec<String> = n.ips.iter().map(ToString::to_string).collect();
        assert_eq!(
            ips,
            ["127.0.0.1", "::1", "10.43.0.1", "10.1.2.3", "192.168.9.9"]
        );
    }

    #[test]
    fn generates_once_and_reuses() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let first = ensure(&dir, &names()).unwrap();
        for key in [CA_KEY, SERVER_KEY, ADMIN_KEY] {
            let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let second = ensure(&dir, &names()).unwrap();
        assert_eq!(first.ca_cert, second.ca_cert);
        assert_eq!(first.server_cert, second.server_cert);
        assert_eq!(first.admin_key, second.admin_key);
    }

    #[test]
    fn new_names_reissue_the_serving_certificates_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let first = ensure(&dir, &names()).unwrap();
        let moved = ServingNames::for_host(Some("node-a"), &[IpAddr::from([10, 9, 9, 9])], &[]);
        let second = ensure(&dir, &moved).unwrap();
        assert_eq!(first.ca_cert, second.ca_cert);
        assert_eq!(first.admin_cert, second.admin_cert);
        assert_ne!(first.server_cert, second.server_cert);
        assert_ne!(first.kubelet_serving_cert, second.kubelet_serving_cert);
        let third = ensure(&dir, &moved).unwrap();
        assert_eq!(second.server_cert, third.server_cert);
    }

    #[test]
    fn lone_key_from_an_interrupted_run_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ensure(tmp.path(), &names()).unwrap();
        fs::remove_file(tmp.path().join(ADMIN_CERT)).unwrap();
        let second = ensure(tmp.path(), &names()).unwrap();
        assert_eq!(first.ca_cert, second.ca_cert);
        assert_eq!(first.server_cert, second.server_cert);
        assert_ne!(first.admin_cert, second.admin_cert);
    }

    #[test]
    fn refuses_leaf_certificates_without_their_ca() {
        let tmp = tempfile::tempdir().unwrap();
        ensure(tmp.path(), &names()).unwrap();
        fs::remove_file(tmp.path().join(CA_CERT)).unwrap();
        let err = ensure(tmp.path(), &names()).unwrap_err().to_string();
        assert!(err.contains("CA that signed it is missing"), "{err}");
    }

    #[test]
    fn refuses_a_certificate_whose_key_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        ensure(tmp.path(), &names()).unwrap();
        fs::remove_file(tmp.path().join(CA_KEY)).unwrap();
        let err = ensure(tmp.path(), &names()).unwrap_err().to_string();
        assert!(err.contains("key"), "{err}");
    }

    /// The serving certificate chains to the CA and is valid for every name,
    /// and the admin certificate is accepted as a client certificate: checked
    /// with rustls' own verifiers, as a real client and the server would.
    #[test]
    fn certificates_verify_against_the_ca() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};

        let tmp = tempfile::tempdir().unwrap();
        let pki = ensure(tmp.path(), &names()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let roots = std::sync::Arc::new(roots);

        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server_cert = CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap();
        for name in [
            "localhost",
            "node-a",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            "::1",
            "10.1.2.3",
        ] {
            let name = ServerName::try_from(name).unwrap();
            server
                .verify_server_cert(&server_cert, &[], &name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert!(
            server
                .verify_server_cert(&server_cert, &[], &other, &[], UnixTime::now())
                .is_err()
        );

        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        let admin_cert = CertificateDer::from_pem_slice(pki.admin_cert.as_bytes()).unwrap();
        client
            .verify_client_cert(&admin_cert, &[], UnixTime::now())
            .unwrap();
    }
}
