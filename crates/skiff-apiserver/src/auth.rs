//! Authentication: a client certificate signed by the cluster CA (verified
//! during the TLS handshake) or a bearer token the server knows. Health and
//! version endpoints are public, as upstream's `system:public-info-viewer`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// What the TLS layer learned about the peer, attached to each request.
#[derive(Debug, Clone, Copy)]
pub struct PeerIdentity {
    /// The client presented a certificate the cluster CA signed.
    pub verified_certificate: bool,
}

/// Tokens accepted as `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Default)]
pub struct Tokens(pub Arc<Vec<String>>);

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

/// Refuses unauthenticated requests with 401.
pub async fn authenticate(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let by_certificate = request
        .extensions()
        .get::<PeerIdentity>()
        .is_some_and(|p| p.verified_certificate);
    let by_token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| {
            tokens
                .0
                .iter()
                .any(|known| constant_time_eq(known, token.trim()))
        });
    let public = PUBLIC_PATHS.contains(&request.uri().path());
    if by_certificate || by_token || public {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
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
}
