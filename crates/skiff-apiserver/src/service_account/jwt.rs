//! Service account JWTs: upstream's claims, compact ES256 serialization, and
//! the checks that need nothing but the token and the clock (signature,
//! issuer, audience, validity window). The checks against live objects
//! (the account and the bound pod, secret or node) are in
//! [`super::authenticate`].
//!
//! A token's payload, as upstream writes it (keys sorted):
//!
//! ```text
//! {"aud":["https://kubernetes.default.svc.cluster.local"],"exp":1700003600,
//!  "iat":1700000000,"iss":"https://kubernetes.default.svc.cluster.local",
//!  "jti":"…","kubernetes.io":{"namespace":"ns","pod":{"name":"p","uid":"…"},
//!  "serviceaccount":{"name":"default","uid":"…"}},"nbf":1700000000,
//!  "sub":"system:serviceaccount:ns:default"}
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::key::{ALGORITHM, SigningKey};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, as upstream's JWT
/// library's default leeway.
pub const LEEWAY_SECONDS: i64 = 60;

/// A reference to an object in the private claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectClaim {
    /// The object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The account's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The node: of the bound pod, or the bound node itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectClaim>,
    /// The bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectClaim>,
    /// The bound secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectClaim>,
    /// The account.
    #[serde(default)]
    pub serviceaccount: ObjectClaim,
    /// When a pod-bound token whose lifetime was extended should have been
    /// refreshed (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A service account token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences (always written as an array; read as a string or array).
    #[serde(default, deserialize_with = "string_or_array")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Token ID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// The private claims.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    /// Not before.
    pub nbf: i64,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
}

fn string_or_array<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// Why a bearer token is not a valid service account token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, or its parts do not decode.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Issued by someone else.
    #[error("token issuer {0:?} is invalid")]
    Issuer(String),
    /// Signed with another algorithm or key.
    #[error("invalid signature")]
    Signature,
    /// No audience shared with the API server.
    #[error("token audiences {token:?} is invalid for the target audiences {accepted:?}")]
    Audience {
        /// The token's audiences.
        token: Vec<String>,
        /// The API server's.
        accepted: Vec<String>,
    },
    /// Past `exp`.
    #[error("service account token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("service account token is not valid yet")]
    NotValidYet,
    /// `iat` in the future.
    #[error("service account token is issued in the future")]
    IssuedInTheFuture,
    /// The account, or the object the token is bound to, is gone or was
    /// replaced.
    #[error("{0}")]
    Invalidated(String),
}

/// The compact ES256 serialization of `claims`, signed by `key`.
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    let header = json!({"alg": ALGORITHM, "kid": key.key_id()});
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = URL_SAFE_NO_PAD.encode(key.sign(signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// The issuer a compact JWT claims, unverified: tokens of other issuers are
/// not ours to judge.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value["iss"].as_str().map(String::from)
}

/// Verifies `token`'s signature by `key` and issuer, its audiences against
/// `audiences` (a token without any gets them) and its validity window at
/// `now` (seconds since the epoch); returns its claims.
pub fn verify(
    key: &SigningKey,
    issuer: &str,
    audiences: &[String],
    token: &str,
    now: i64,
) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not three dot-separated parts".into(),
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| TokenError::Malformed(format!("{what}: {e}")))
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(header, "header")?)
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    if header["alg"] != ALGORITHM {
        return Err(TokenError::Signature);
    }
    if let Some(kid) = header["kid"].as_str()
        && kid != key.key_id()
    {
        return Err(TokenError::Signature);
    }
    let signing_input = &token[..token.len() - signature.len() - 1];
    if !key.verify(signing_input.as_bytes(), &decode(signature, "signature")?) {
        return Err(TokenError::Signature);
    }
    let claims: Claims = serde_json::from_slice(&decode(payload, "payload")?)
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    if claims.iss != issuer {
        return Err(TokenError::Issuer(claims.iss));
    }
    let token_audiences = if claims.aud.is_empty() {
        audiences
    } else {
        &claims.aud[..]
    };
    if !token_audiences.iter().any(|a| audiences.contains(a)) {
        return Err(TokenError::Audience {
            token: token_audiences.to_vec(),
            accepted: audiences.to_vec(),
        });
    }
    if now - LEEWAY_SECONDS > claims.exp {
        return Err(TokenError::Expired);
    }
    if now + LEEWAY_SECONDS < claims.nbf {
        return Err(TokenError::NotValidYet);
    }
    if now + LEEWAY_SECONDS < claims.iat {
        return Err(TokenError::IssuedInTheFuture);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

    fn claims(now: i64) -> Claims {
        Claims {
            aud: vec![ISSUER.into()],
            exp: now + 3600,
            iat: now,
            iss: ISSUER.into(),
            jti: "id".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                serviceaccount: ObjectClaim {
                    name: "default".into(),
                    uid: "u1".into(),
                },
                ..KubernetesClaims::default()
            },
            nbf: now,
            sub: "system:serviceaccount:ns:default".into(),
        }
    }

    fn audiences() -> Vec<String> {
        vec![ISSUER.to_string()]
    }

    #[test]
    fn round_trip() {
        let key = SigningKey::generate().unwrap();
        let now = 1_700_000_000;
        let token = sign(&key, &claims(now));
        assert_eq!(unverified_issuer(&token).as_deref(), Some(ISSUER));
        let verified = verify(&key, ISSUER, &audiences(), &token, now + 10).unwrap();
        assert_eq!(verified, claims(now));
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header, json!({"alg": "ES256", "kid": key.key_id()}));
    }

    #[test]
    fn payload_has_upstreams_shape() {
        let key = SigningKey::generate().unwrap();
        let mut c = claims(100);
        c.kubernetes.pod = Some(ObjectClaim {
            name: "p".into(),
            uid: "pu".into(),
        });
        c.kubernetes.node = Some(ObjectClaim {
            name: "n".into(),
            uid: String::new(),
        });
        let token = sign(&key, &c);
        let payload: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            payload,
            json!({
                "aud": [ISSUER], "exp": 3700, "iat": 100, "iss": ISSUER, "jti": "id",
                "kubernetes.io": {
                    "namespace": "ns",
                    "node": {"name": "n"},
                    "pod": {"name": "p", "uid": "pu"},
                    "serviceaccount": {"name": "default", "uid": "u1"},
                },
                "nbf": 100, "sub": "system:serviceaccount:ns:default",
            })
        );
    }

    #[test]
    fn expiry_and_validity_window_allow_a_minute_of_skew() {
        let key = SigningKey::generate().unwrap();
        let now = 1_700_000_000;
        let token = sign(&key, &claims(now));
        let at = |t| verify(&key, ISSUER, &audiences(), &token, t);
        assert!(at(now + 3600 + 60).is_ok());
        assert_eq!(at(now + 3600 + 61).unwrap_err(), TokenError::Expired);
        assert!(at(now - 60).is_ok());
        assert_eq!(at(now - 61).unwrap_err(), TokenError::NotValidYet);
        let mut future = claims(now);
        future.nbf = now - 1000;
        let token = sign(&key, &future);
        assert_eq!(
            verify(&key, ISSUER, &audiences(), &token, now - 100).unwrap_err(),
            TokenError::IssuedInTheFuture
        );
    }

    #[test]
    fn another_key_or_a_tampered_token_is_refused() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let now = 1_700_000_000;
        let token = sign(&other, &claims(now));
        assert_eq!(
            verify(&key, ISSUER, &audiences(), &token, now).unwrap_err(),
            TokenError::Signature
        );
        let token = sign(&key, &claims(now));
        let mut forged = claims(now);
        forged.sub = "system:serviceaccount:kube-system:admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            verify(&key, ISSUER, &audiences(), &tampered, now).unwrap_err(),
            TokenError::Signature
        );
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(
            verify(&key, ISSUER, &audiences(), &none_alg, now).unwrap_err(),
            TokenError::Signature
        );
        assert!(matches!(
            verify(&key, ISSUER, &audiences(), "abc", now).unwrap_err(),
            TokenError::Malformed(_)
        ));
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let key = SigningKey::generate().unwrap();
        let now = 1_700_000_000;
        let mut c = claims(now);
        c.iss = "https://elsewhere".into();
        let token = sign(&key, &c);
        assert_eq!(
            verify(&key, ISSUER, &audiences(), &token, now).unwrap_err(),
            TokenError::Issuer("https://elsewhere".into())
        );
        let mut c = claims(now);
        c.aud = vec!["vault".into()];
        let token = sign(&key, &c);
        let err = verify(&key, ISSUER, &audiences(), &token, now).unwrap_err();
        assert!(matches!(err, TokenError::Audience { .. }), "{err}");
        // A token without audiences is taken as meant for the API server.
        let mut c = claims(now);
        c.aud.clear();
        let token = sign(&key, &c);
        assert!(verify(&key, ISSUER, &audiences(), &token, now).is_ok());
        // A single audience may be written as a string.
        let claims: Claims = serde_json::from_value(json!({
            "aud": ISSUER, "exp": 1, "iat": 0, "iss": ISSUER, "nbf": 0, "sub": "s",
            "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "a", "uid": "u"}},
        }))
        .unwrap();
        assert_eq!(claims.aud, vec![ISSUER.to_string()]);
    }
}
