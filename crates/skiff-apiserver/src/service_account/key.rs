//! The service account signing key: one ECDSA P-256 key (ES256), made once
//! and kept as a PKCS#8 PEM file in the server's data directory (k3s keeps
//! its key at `server/tls/service.key`), so tokens stay valid across
//! restarts.
//!
//! The key ID is upstream's: the unpadded base64url SHA-256 of the public
//! key's DER `SubjectPublicKeyInfo`, so a relying party can match a token's
//! `kid` header to the JWKS entry.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The JOSE name of the signature algorithm.
pub const ALGORITHM: &str = "ES256";

/// The DER prefix of a P-256 `SubjectPublicKeyInfo` (id-ecPublicKey,
/// prime256v1, then a 66-byte BIT STRING holding the uncompressed point).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading the key file failed.
    #[error("reading the service account key {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a new key file failed.
    #[error("writing the service account key {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a PKCS#8 ECDSA P-256 private key.
    #[error("the service account key {path} is not a PKCS#8 ECDSA P-256 private key: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system random generator failed.
    #[error("generating an ECDSA P-256 key failed")]
    Generate,
}

/// An ES256 signing key with its key ID.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    key_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec()).map_err(|_| KeyError::Generate)
    }

    /// The key in `path`, made and written there (mode 0600) if the file
    /// does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem).map_err(|reason| KeyError::Parse {
                path: path.to_path_buf(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_private(path, key.to_pem().as_bytes()).map_err(|source| KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok(key)
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses a `PRIVATE KEY` (PKCS#8) PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let start = pem
            .find(PEM_BEGIN)
            .ok_or_else(|| format!("no {PEM_BEGIN} block"))?;
        let body = &pem[start + PEM_BEGIN.len()..];
        let end = body
            .find(PEM_END)
            .ok_or_else(|| format!("no {PEM_END} line"))?;
        let base64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD
            .decode(base64)
            .map_err(|e| format!("invalid base64: {e}"))?;
        Self::from_pkcs8(der)
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| e.to_string())?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(SigningKey {
            pair,
            pkcs8,
            key_id,
            rng,
        })
    }

    /// The key as a `PRIVATE KEY` PEM document.
    pub fn to_pem(&self) -> String {
        let encoded = STANDARD.encode(&self.pkcs8);
        let mut pem = String::from(PEM_BEGIN);
        pem.push('\n');
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    /// The key ID (`kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The uncompressed public point (`0x04 || x || y`).
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key's DER `SubjectPublicKeyInfo`.
    pub fn public_key_der(&self) -> Vec<u8> {
        spki(self.public_point())
    }

    /// The ES256 signature (`r || s`, 64 bytes) of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // Signing with a valid key only fails if the system random generator
        // does, which ring treats as fatal everywhere else too.
        self.pair
            .sign(&self.rng, message)
            .expect("the system random generator works")
            .as_ref()
            .to_vec()
    }

    /// Whether `signature` is this key's ES256 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.public_point())
            .verify(message, signature)
            .is_ok()
    }

    /// The public key as a JSON Web Key, as upstream publishes it.
    pub fn public_jwk(&self) -> Value {
        let point = self.public_point();
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.key_id,
            "crv": "P-256",
            "alg": ALGORITHM,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }
}

fn spki(point: &[u8]) -> Vec<u8> {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    der
}

fn key_id(point: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(spki(point)))
}

/// Writes `contents` to `path` readable by the owner only, through a
/// temporary file so that a crash never leaves half a key behind.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn signatures_verify_only_with_the_signing_key() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let signature = key.sign(b"payload");
        assert_eq!(signature.len(), 64);
        assert!(key.verify(b"payload", &signature));
        assert!(!key.verify(b"payload!", &signature));
        assert!(!other.verify(b"payload", &signature));
        assert_ne!(key.key_id(), other.key_id());
    }

    #[test]
    fn the_key_file_is_made_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.key");
        let first = SigningKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        let signature = first.sign(b"m");
        assert!(second.verify(b"m", &signature));
    }

    #[test]
    fn a_corrupt_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.key");
        std::fs::write(&path, "not a key").unwrap();
        let err = SigningKey::load_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyError::Parse { .. }), "{err}");
        std::fs::write(&path, format!("{PEM_BEGIN}\nAAAA\n{PEM_END}\n")).unwrap();
        assert!(matches!(
            SigningKey::load_or_create(&path).unwrap_err(),
            KeyError::Parse { .. }
        ));
    }

    #[test]
    fn the_public_key_der_and_key_id_are_upstreams() {
        let key = SigningKey::generate().unwrap();
        // The same key through rcgen, which encodes the SubjectPublicKeyInfo
        // itself.
        let pem = key.to_pem();
        let rcgen_key = rcgen::KeyPair::from_pem(&pem).unwrap();
        assert_eq!(
            key.public_key_der(),
            rcgen::PublicKeyData::subject_public_key_info(&rcgen_key)
        );
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(key.public_key_der()));
        assert_eq!(key.key_id(), expected);
        let jwk = key.public_jwk();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        assert_eq!([&[4u8][..], &x, &y].concat(), key.public_point());
        assert_eq!(jwk["kid"], key.key_id());
    }
}
