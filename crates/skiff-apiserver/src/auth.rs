//! Authentication: a client certificate signed by the cluster CA (verified
//! during the TLS handshake), a bearer token the server knows (the
//! bootstrap token), or a service account token this server issued
//! ([`crate::service_account`]). Health and version endpoints are public, as
//! upstream's `system:public-info-viewer`.
//!
//! The user a request authenticated as travels with it as a [`UserInfo`]
//! extension; `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`
//! (`kubectl auth whoami`) answers with it. Anything presented that is not
//! valid is 401 Unauthorized, as a Status.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::rest::Rest;
use crate::service_account::TokenIssuer;

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The user of requests without credentials (public paths only).
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The user of components in the API server's process.
pub const LOOPBACK_USER: &str = "system:apiserver";
/// The group with every permission.
pub const MASTERS_GROUP: &str = "system:masters";
/// The group of bootstrap token users.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

/// Who a request authenticated as (`authentication.k8s.io/v1` UserInfo).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub username: String,
    /// A unique id, if the authenticator knows one.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Further attributes (e.g. a service account token's pod).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The user of a request without credentials.
    pub fn anonymous() -> Self {
        UserInfo {
            username: ANONYMOUS_USER.to_string(),
            groups: vec![UNAUTHENTICATED_GROUP.to_string()],
            ..UserInfo::default()
        }
    }

    /// The API form.
    pub fn to_json(&self) -> Value {
        let mut user = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            user["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            user["extra"] = json!(self.extra);
        }
        user
    }
}

/// What the TLS layer learned about the peer, attached to each request.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    /// The client presented a certificate the cluster CA signed.
    pub verified_certificate: bool,
    /// The user the certificate names: its CN, and its Os as groups.
    pub user: Option<Arc<UserInfo>>,
}

impl PeerIdentity {
    /// The identity of a peer that presented `certificates` (already
    /// verified by the TLS handshake), leaf first.
    pub fn from_certificates(certificates: Option<&[CertificateDer<'_>]>) -> Self {
        match certificates.and_then(<[_]>::first) {
            Some(leaf) => PeerIdentity {
                verified_certificate: true,
                user: Some(Arc::new(certificate_user(leaf.as_ref()))),
            },
            None => PeerIdentity::default(),
        }
    }

    /// Components in the API server's own process (scheduler, controllers,
    /// the server's node agent), as upstream's loopback client: user
    /// `system:apiserver` in `system:masters`.
    pub fn loopback() -> Self {
        PeerIdentity {
            verified_certificate: true,
            user: Some(Arc::new(UserInfo {
                username: LOOPBACK_USER.to_string(),
                groups: vec![MASTERS_GROUP.to_string(), AUTHENTICATED_GROUP.to_string()],
                ..UserInfo::default()
            })),
        }
    }
}

/// Paths served without authentication: health, version, and the cluster CA
/// (`/cacerts`, which joining nodes check against the hash in their token).
pub const PUBLIC_PATHS: [&str; 6] = [
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/version/",
    "/cacerts",
];

/// Decides who a request is.
#[derive(Clone, Default)]
pub struct Authenticator {
    tokens: Arc<Vec<String>>,
    service_accounts: Option<(Arc<TokenIssuer>, Arc<Rest>)>,
}

impl Authenticator {
    /// Accepts client certificates and the bearer `tokens`.
    pub fn new(tokens: Vec<String>) -> Self {
        Authenticator {
            tokens: Arc::new(tokens),
            service_accounts: None,
        }
    }

    /// Also accepts the service account tokens of `issuer`, checking their
    /// accounts and bound objects in `rest`.
    pub fn with_service_accounts(mut self, issuer: Arc<TokenIssuer>, rest: Arc<Rest>) -> Self {
        self.service_accounts = Some((issuer, rest));
        self
    }

    /// Puts this authentication in front of `router`.
    pub fn layer(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self, authenticate))
    }

    /// The user of a request with `peer` and bearer `token`: `Ok(None)` if
    /// it presents no credentials, `Err` if it presents ones that are not
    /// valid.
    async fn user(
        &self,
        peer: Option<PeerIdentity>,
        token: Option<String>,
    ) -> Result<Option<UserInfo>, ()> {
        if let Some(peer) = peer.filter(|p| p.verified_certificate) {
            return Ok(Some(peer.user.as_deref().cloned().unwrap_or_else(|| {
                UserInfo {
                    groups: vec![AUTHENTICATED_GROUP.to_string()],
                    ..UserInfo::default()
                }
            })));
        }
        let Some(token) = token else {
            return Ok(None);
        };
        if self
            .tokens
            .iter()
            .any(|known| constant_time_eq(known, &token))
        {
            return Ok(Some(bootstrap_user(&token)));
        }
        if let Some((issuer, rest)) = &self.service_accounts {
            let now = jiff::Timestamp::now().as_second();
            match issuer.authenticate(rest, &token, now).await {
                Ok(Some(user)) => return Ok(Some(user)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "service account token refused");
                    return Err(());
                }
            }
        }
        Err(())
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A bootstrap token (`id.secret`) authenticates as `system:bootstrap:id`.
fn bootstrap_user(token: &str) -> UserInfo {
    let id = token.split_once('.').map_or("", |(id, _)| id);
    UserInfo {
        username: format!("system:bootstrap:{id}"),
        groups: vec![
            BOOTSTRAPPERS_GROUP.to_string(),
            AUTHENTICATED_GROUP.to_string(),
        ],
        ..UserInfo::default()
    }
}

/// Refuses unauthenticated requests with 401; passes the user on.
pub async fn authenticate(
    State(authenticator): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let public = PUBLIC_PATHS.contains(&request.uri().path());
    let peer = request.extensions().get::<PeerIdentity>().cloned();
    let token = bearer_token(&request).map(String::from);
    match authenticator.user(peer, token).await {
        Ok(Some(user)) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Ok(None) if public => {
            request.extensions_mut().insert(UserInfo::anonymous());
            next.run(request).await
        }
        Err(()) if public => next.run(request).await,
        Ok(None) | Err(()) => ApiError::unauthorized().into_response(),
    }
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`: who the
/// request authenticated as.
pub async fn self_subject_review(request: Request) -> Response {
    let user = request
        .extensions()
        .get::<UserInfo>()
        .cloned()
        .unwrap_or_else(UserInfo::anonymous);
    let review = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": crate::object::format_time(jiff::Timestamp::now())},
        "status": {"userInfo": user.to_json()},
    });
    (
        StatusCode::CREATED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        review.to_string(),
    )
        .into_response()
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The user a client certificate names: upstream maps the subject's common
/// name to the user and its organizations to groups.
fn certificate_user(der: &[u8]) -> UserInfo {
    let (common_name, organizations) = subject_names(der).unwrap_or_default();
    let mut groups = organizations;
    groups.push(AUTHENTICATED_GROUP.to_string());
    UserInfo {
        username: common_name,
        groups,
        ..UserInfo::default()
    }
}

/// DER tags used below.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;
/// The attribute types `commonName` (2.5.4.3) and `organizationName`
/// (2.5.4.10).
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// One DER element: its tag, contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject's common name and organizations of an X.509 certificate.
fn subject_names(certificate: &[u8]) -> Option<(String, Vec<String>)> {
    let (SEQUENCE, cert, _) = element(certificate)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let mut fields = tbs;
    let (tag, _, after) = element(fields)?;
    if tag == EXPLICIT_VERSION {
        fields = after;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        fields = element(fields)?.2;
    }
    let (SEQUENCE, mut subject, _) = element(fields)? else {
        return None;
    };
    let mut common_name = String::new();
    let mut organizations = Vec::new();
    while !subject.is_empty() {
        let (SET, mut attributes, rest) = element(subject)? else {
            return None;
        };
        subject = rest;
        while !attributes.is_empty() {
            let (SEQUENCE, attribute, rest) = element(attributes)? else {
                return None;
            };
            attributes = rest;
            let (OID, kind, value) = element(attribute)? else {
                return None;
            };
            let (_, value, _) = element(value)?;
            let value = String::from_utf8_lossy(value).into_owned();
            if kind == COMMON_NAME {
                common_name = value;
            } else if kind == ORGANIZATION {
                organizations.push(value);
            }
        }
    }
    Some((common_name, organizations))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }

    #[test]
    fn certificate_subjects_name_the_user() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:admin");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let cert = params.self_signed(&key).unwrap();
        let identity = PeerIdentity::from_certificates(Some(&[cert.der().clone()]));
        assert!(identity.verified_certificate);
        let user = identity.user.unwrap();
        assert_eq!(user.username, "system:admin");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);
        assert!(!PeerIdentity::from_certificates(None).verified_certificate);
        assert_eq!(subject_names(b"\x30\x05junk"), None);
    }

    #[test]
    fn bootstrap_tokens_name_their_id() {
        let user = bootstrap_user("abcdef.0123456789abcdef");
        assert_eq!(user.username, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            ["system:bootstrappers", "system:authenticated"]
        );
    }

    #[test]
    fn user_info_json_omits_empty_fields() {
        let anonymous = UserInfo::anonymous().to_json();
        assert_eq!(
            anonymous,
            json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]})
        );
    }
}
