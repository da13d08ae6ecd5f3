//! The routing table: which backend endpoints serve a request's host and path.
//!
//! [`RoutingTable::build`] is a pure function of the owned Ingresses and the
//! Services and EndpointSlices they reference; the proxy only looks it up.
//! Rebuilding the whole table on every change keeps the semantics in one
//! place, and a table of a few thousand routes builds in well under a
//! millisecond per hundred Ingresses.
//!
//! # Matching
//!
//! The networking.k8s.io/v1 rules, as the API reference states them:
//!
//! - **Hosts.** A rule's host is exact (`foo.example.com`) or a wildcard
//!   whose `*` stands for exactly one DNS label (`*.example.com` matches
//!   `a.example.com`, not `example.com` nor `a.b.example.com`). Rules without
//!   a host apply to every host. Host names compare case-insensitively; the
//!   request's port and a trailing dot are ignored.
//! - **Paths.** `Exact` matches the whole path, case-sensitively. `Prefix`
//!   matches element by element: `/foo` (or `/foo/`) matches `/foo`,
//!   `/foo/` and `/foo/bar`, never `/foobar`; `/` matches everything.
//!   `ImplementationSpecific` is treated as `Prefix`.
//! - **Precedence.** An exact host beats a wildcard host, which beats the
//!   host-less rules: the most specific host whose rules match the path
//!   wins, and only when none of its paths match does the next one get a
//!   say. Among the paths of one host the longest wins (a `Prefix` path
//!   counted without its trailing slash), and `Exact` beats `Prefix` at equal
//!   length. When nothing matches, the default backend answers, or the proxy
//!   answers 404.
//!
//! Worked example: rules `a.example.com /api` (Prefix), `*.example.com /`
//! (Prefix) and the host-less `/static` (Exact). `a.example.com/api/v1` goes
//! to the first; `a.example.com/` to the second (the exact host has no
//! matching path); `b.example.com/static` to the second too (a wildcard
//! `/` still beats the host-less rule, because hosts are tried first);
//! `other.org/static` to the third; `other.org/x` to the default backend.
//!
//! # Conflicts
//!
//! Two Ingresses may claim the same host, path and path type, or both set a
//! `spec.defaultBackend`. As upstream controllers do, the oldest Ingress
//! (creation time, then namespace and name) keeps the route; the others are
//! reported in [`RoutingTable::conflicts`] so they can be logged.
//!
//! # Backends
//!
//! A service backend names a Service port by number or by name. The Service
//! port's name is the name of the matching EndpointSlice port (label
//! `kubernetes.io/service-name`), which gives the target port of each
//! endpoint; only endpoints whose `ready` condition is true (or unset, which
//! the API defines as ready) are used. Routes to the same Service port share
//! one [`Backend`], so round-robin spreads over all of them. A backend
//! without ready endpoints makes the proxy answer 503, and
//! [`Backend::problem`] says why.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, ServiceBackendPort};
use kube::ResourceExt;

#[cfg(test)]
mod tests;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects a routing table is built from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The Ingresses this controller owns (see [`crate::class`]).
    pub ingresses: &'a [Arc<Ingress>],
    /// Services of every namespace.
    pub services: &'a [Arc<Service>],
    /// EndpointSlices of every namespace.
    pub endpoint_slices: &'a [Arc<EndpointSlice>],
}

/// An Ingress, named for logs and conflict reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IngressRef {
    /// The Ingress's namespace.
    pub namespace: String,
    /// The Ingress's name.
    pub name: String,
}

impl IngressRef {
    fn of(ingress: &Ingress) -> Self {
        Self {
            namespace: ingress.namespace().unwrap_or_default(),
            name: ingress.name_any(),
        }
    }
}

impl fmt::Display for IngressRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How a route's path is compared with the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathMatch {
    /// The whole path, case-sensitively.
    Exact,
    /// Element-wise prefix (also `ImplementationSpecific`).
    Prefix,
}

impl PathMatch {
    fn from_path_type(path_type: &str) -> Self {
        if path_type == "Exact" {
            Self::Exact
        } else {
            Self::Prefix
        }
    }
}

/// The Service port a backend names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// `port.number`.
    Number(i32),
    /// `port.name`.
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// What a backend refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendRef {
    /// A Service port in the Ingress's namespace.
    Service {
        /// The namespace (the Ingress's).
        namespace: String,
        /// The Service's name.
        name: String,
        /// The Service port.
        port: PortRef,
    },
    /// `backend.resource`, which this controller does not serve.
    Resource {
        /// The namespace (the Ingress's).
        namespace: String,
        /// `kind/name` of the resource.
        name: String,
    },
    /// A service backend without a port number or name.
    Invalid {
        /// The namespace (the Ingress's).
        namespace: String,
        /// The Service's name.
        name: String,
    },
}

impl fmt::Display for BackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service {
                namespace,
                name,
                port,
            } => write!(f, "service {namespace}/{name}:{port}"),
            Self::Resource { namespace, name } => write!(f, "resource {namespace}/{name}"),
            Self::Invalid { namespace, name } => write!(f, "service {namespace}/{name}"),
        }
    }
}

/// Why a backend has no endpoints to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendProblem {
    /// The Service does not exist.
    NoService,
    /// The Service has no port with the backend's number or name.
    NoServicePort,
    /// An ExternalName Service, which has no endpoints.
    ExternalName,
    /// The Service has endpoints, none of them ready (or none at all).
    NoReadyEndpoints,
    /// A resource backend, or a service backend without a port.
    Unsupported,
}

impl fmt::Display for BackendProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoService => "service not found",
            Self::NoServicePort => "service port not found",
            Self::ExternalName => "ExternalName services are not proxied",
            Self::NoReadyEndpoints => "no ready endpoints",
            Self::Unsupported => "unsupported backend",
        })
    }
}

/// A resolved backend: the ready endpoints of one Service port.
#[derive(Debug)]
pub struct Backend {
    reference: BackendRef,
    endpoints: Vec<SocketAddr>,
    problem: Option<BackendProblem>,
    next: AtomicUsize,
}

impl Backend {
    fn new(reference: BackendRef, resolved: Result<Vec<SocketAddr>, BackendProblem>) -> Self {
        let (endpoints, problem) = match resolved {
            Ok(endpoints) if endpoints.is_empty() => {
                (endpoints, Some(BackendProblem::NoReadyEndpoints))
            }
            Ok(endpoints) => (endpoints, None),
            Err(problem) => (Vec::new(), Some(problem)),
        };
        Self {
            reference,
            endpoints,
            problem,
            next: AtomicUsize::new(0),
        }
    }

    /// What the backend refers to.
    pub fn reference(&self) -> &BackendRef {
        &self.reference
    }

    /// The ready endpoints, sorted.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// Why there is no endpoint, if there is none.
    pub fn problem(&self) -> Option<BackendProblem> {
        self.problem
    }

    /// The next endpoint in round-robin order, or `None` when there are no
    /// ready endpoints (the proxy answers 503).
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(self.endpoints[i])
    }
}

/// A route dropped because an older Ingress claims the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The host (`*` for host-less rules), path and match kind, or `None` for
    /// a `spec.defaultBackend`.
    pub route: Option<(String, String, PathMatch)>,
    /// The Ingress that keeps it.
    pub kept: IngressRef,
    /// The Ingress whose claim is ignored.
    pub dropped: IngressRef,
}

#[derive(Debug)]
struct Route {
    /// The path as compared: for `Prefix`, without trailing slashes (so `/`
    /// is the empty string).
    path: String,
    kind: PathMatch,
    backend: Arc<Backend>,
    source: IngressRef,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathMatch::Exact => path == self.path,
            PathMatch::Prefix => path.strip_prefix(self.path.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || self.path.is_empty()
            }),
        }
    }
}

/// The routes of one host, most specific first.
#[derive(Debug, Default)]
struct HostRoutes {
    routes: Vec<Route>,
}

impl HostRoutes {
    fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(path))
    }

    /// Longest path first, `Exact` before `Prefix` at equal length; the sort
    /// is stable, so insertion (oldest Ingress first) breaks the rest.
    fn sort(&mut self) {
        self.routes.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| a.kind.cmp(&b.kind))
        });
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum RouteMatch<'a> {
    /// A rule or the default backend matched.
    Backend {
        /// The backend to send to.
        backend: &'a Arc<Backend>,
        /// The Ingress the rule comes from.
        source: &'a IngressRef,
    },
    /// Nothing matched and there is no default backend.
    NotFound,
}

/// Host and path rules of every owned Ingress, ready to look up.
#[derive(Debug, Default)]
pub struct RoutingTable {
    exact: HashMap<String, HostRoutes>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, HostRoutes>,
    any_host: HostRoutes,
    default_backend: Option<(Arc<Backend>, IngressRef)>,
    conflicts: Vec<Conflict>,
}

impl RoutingTable {
    /// Builds the table from the owned Ingresses and the Services and
    /// EndpointSlices they reference.
    pub fn build(inputs: &Inputs<'_>) -> Self {
        let resolver = Resolver::new(inputs.services, inputs.endpoint_slices);
        let mut backends: HashMap<BackendRef, Arc<Backend>> = HashMap::new();
        let mut backend = |reference: BackendRef| {
            Arc::clone(
                backends
                    .entry(reference.clone())
                    .or_insert_with(|| Arc::new(resolver.backend(reference))),
            )
        };

        let mut table = Self::default();
        // (host key, path, kind) → the Ingress that claimed it first.
        let mut claimed: HashMap<(String, String, PathMatch), IngressRef> = HashMap::new();
        for ingress in oldest_first(inputs.ingresses) {
            let source = IngressRef::of(ingress);
            let Some(spec) = &ingress.spec else { continue };
            if let Some(default) = &spec.default_backend {
                match &table.default_backend {
                    Some((_, kept)) => table.conflicts.push(Conflict {
                        route: None,
                        kept: kept.clone(),
                        dropped: source.clone(),
                    }),
                    None => {
                        let reference = backend_ref(&source.namespace, default);
                        table.default_backend = Some((backend(reference), source.clone()));
                    }
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule
                    .host
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase);
                let Some(http) = &rule.http else { continue };
                for p in &http.paths {
                    let kind = PathMatch::from_path_type(&p.path_type);
                    let raw = p.path.as_deref().unwrap_or("/");
                    let path = match kind {
                        PathMatch::Exact => raw.to_owned(),
                        PathMatch::Prefix => raw.trim_end_matches('/').to_owned(),
                    };
                    let key = (
                        host.clone().unwrap_or_else(|| "*".to_owned()),
                        path.clone(),
                        kind,
                    );
                    if let Some(kept) = claimed.get(&key) {
                        if *kept != source {
                            table.conflicts.push(Conflict {
                                route: Some(key),
                                kept: kept.clone(),
                                dropped: source.clone(),
                            });
                        }
                        continue;
                    }
                    claimed.insert(key, source.clone());
                    let route = Route {
                        path,
                        kind,
                        backend: backend(backend_ref(&source.namespace, &p.backend)),
                        source: source.clone(),
                    };
                    table.host_routes(host.as_deref()).routes.push(route);
                }
            }
        }
        for routes in table
            .exact
            .values_mut()
            .chain(table.wildcard.values_mut())
            .chain(std::iter::once(&mut table.any_host))
        {
            routes.sort();
        }
        table
    }

    fn host_routes(&mut self, host: Option<&str>) -> &mut HostRoutes {
        match host {
            None => &mut self.any_host,
            Some(host) => match host.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.to_owned()).or_default(),
                None => self.exact.entry(host.to_owned()).or_default(),
            },
        }
    }

    /// Looks up a request. `host` is the Host header or the URI authority as
    /// received (case, port and trailing dot are ignored); `path` is the
    /// request path without the query.
    pub fn route(&self, host: &str, path: &str) -> RouteMatch<'_> {
        let host = normalize_host(host);
        let wildcard = host
            .split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, suffix)| self.wildcard.get(suffix));
        let found = [
            self.exact.get(host.as_ref()),
            wildcard,
            Some(&self.any_host),
        ]
        .into_iter()
        .flatten()
        .find_map(|routes| routes.find(path));
        match (found, &self.default_backend) {
            (Some(route), _) => RouteMatch::Backend {
                backend: &route.backend,
                source: &route.source,
            },
            (None, Some((backend, source))) => RouteMatch::Backend { backend, source },
            (None, None) => RouteMatch::NotFound,
        }
    }

    /// Claims ignored because an older Ingress made the same one.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Every distinct backend of the table, for logs.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        let mut seen: BTreeMap<*const Backend, &Arc<Backend>> = BTreeMap::new();
        let routes = self
            .exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any_host))
            .flat_map(|r| r.routes.iter().map(|route| &route.backend));
        for backend in routes.chain(self.default_backend.iter().map(|(b, _)| b)) {
            seen.insert(Arc::as_ptr(backend), backend);
        }
        seen.into_values()
    }
}

/// Lower-cases a Host header value and drops its port and trailing dot,
/// borrowing when nothing changes.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        // An IPv6 literal: `[::1]:8080`.
        host.split_once(']')
            .map_or(host, |(addr, _)| &host[..=addr.len()])
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Ingresses from oldest to newest (creation time, then namespace and name):
/// the order in which conflicting claims are granted.
pub(crate) fn oldest_first(ingresses: &[Arc<Ingress>]) -> Vec<&Arc<Ingress>> {
    let mut sorted: Vec<&Arc<Ingress>> = ingresses.iter().collect();
    sorted.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.metadata.namespace.cmp(&b.metadata.namespace))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    sorted
}

fn backend_ref(namespace: &str, backend: &IngressBackend) -> BackendRef {
    let namespace = namespace.to_owned();
    if let Some(service) = &backend.service {
        let port = match &service.port {
            Some(ServiceBackendPort {
                number: Some(n), ..
            }) if *n != 0 => Some(PortRef::Number(*n)),
            Some(ServiceBackendPort {
                name: Some(name), ..
            }) if !name.is_empty() => Some(PortRef::Name(name.clone())),
            _ => None,
        };
        return match port {
            Some(port) => BackendRef::Service {
                namespace,
                name: service.name.clone(),
                port,
            },
            None => BackendRef::Invalid {
                namespace,
                name: service.name.clone(),
            },
        };
    }
    let name = backend
        .resource
        .as_ref()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .unwrap_or_default();
    BackendRef::Resource { namespace, name }
}

/// Services and EndpointSlices indexed by namespace and Service name.
struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Resolver<'a> {
    fn new(services: &'a [Arc<Service>], slices: &'a [Arc<EndpointSlice>]) -> Self {
        let services = services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    &**s,
                ))
            })
            .collect();
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let namespace = slice.metadata.namespace.as_deref();
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(namespace), Some(service)) = (namespace, service) {
                by_service
                    .entry((namespace, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        Self {
            services,
            slices: by_service,
        }
    }

    fn backend(&self, reference: BackendRef) -> Backend {
        let resolved = match &reference {
            BackendRef::Service {
                namespace,
                name,
                port,
            } => self.endpoints(namespace, name, port),
            BackendRef::Resource { .. } | BackendRef::Invalid { .. } => {
                Err(BackendProblem::Unsupported)
            }
        };
        Backend::new(reference, resolved)
    }

    fn endpoints(
        &self,
        namespace: &str,
        name: &str,
        port: &PortRef,
    ) -> Result<Vec<SocketAddr>, BackendProblem> {
        let service = self
            .services
            .get(&(namespace, name))
            .ok_or(BackendProblem::NoService)?;
        let spec = service.spec.as_ref().ok_or(BackendProblem::NoServicePort)?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err(BackendProblem::ExternalName);
        }
        let service_port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| match port {
                PortRef::Number(n) => p.port == *n,
                PortRef::Name(wanted) => p.name.as_deref() == Some(wanted.as_str()),
            })
            .ok_or(BackendProblem::NoServicePort)?;
        let port_name = service_port.name.as_deref().unwrap_or("");

        let mut endpoints = Vec::new();
        for slice in self.slices.get(&(namespace, name)).into_iter().flatten() {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let target = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            });
            let Some(target) = target
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                let address = endpoint
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok());
                if let (true, Some(address)) = (ready, address) {
                    endpoints.push(SocketAddr::new(address, target));
                }
            }
        }
        endpoints.sort_unstable();
        endpoints.dedup();
        Ok(endpoints)
    }
}
