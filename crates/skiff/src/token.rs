//! The cluster's bootstrap token, which agents will present to join.
//!
//! It uses upstream's bootstrap-token shape, `[a-z0-9]{6}.[a-z0-9]{16}` (a
//! public id and a secret), so it can later be checked the way upstream checks
//! kubeadm's tokens. Generated once into `DATA_DIR/token` (mode 0600) and reused.

use std::path::Path;

use anyhow::Context;
use ring::rand::{SecureRandom, SystemRandom};

use crate::pki::write_file_atomic;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;

/// Read the token at `path`, or generate and store one if there is none.
pub fn ensure(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            anyhow::ensure!(
                is_well_formed(&token),
                "{} does not hold a token of the form abcdef.0123456789abcdef",
                path.display()
            );
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate()?;
            write_file_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn generate() -> anyhow::Result<String> {
    let rng = SystemRandom::new();
    let id = random_chars(&rng, ID_LEN)?;
    let secret = random_chars(&rng, SECRET_LEN)?;
    Ok(format!("{id}.{secret}"))
}

/// `n` characters drawn uniformly from [`ALPHABET`]: bytes of 252 and above are
/// rejected so that `byte % 36` has no bias.
fn random_chars(rng: &SystemRandom, n: usize) -> anyhow::Result<String> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        rng.fill(&mut buf)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        for &b in buf.iter().filter(|&&b| b < 252) {
            if out.len() == n {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b % 36)]));
        }
    }
    Ok(out)
}

fn is_well_formed(token: &str) -> bool {
    let valid =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| ALPHABET.contains(&b));
    token
        .split_once('.')
        .is_some_and(|(id, secret)| valid(id, ID_LEN) && valid(secret, SECRET_LEN))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("token");
        let first = ensure(&path).unwrap();
        assert!(is_well_formed(&first), "{first}");
        assert_eq!(ensure(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(generate().unwrap(), generate().unwrap());
    }

    #[test]
    fn rejects_a_corrupt_token_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("token");
        std::fs::write(&path, "hello").unwrap();
        assert!(ensure(&path).is_err());
    }

    #[test]
    fn well_formedness() {
        assert!(is_well_formed("abcdef.0123456789abcdef"));
        assert!(!is_well_formed("ABCDEF.0123456789abcdef"));
        assert!(!is_well_formed("abcdef0123456789abcdef"));
        assert!(!is_well_formed("abcde.0123456789abcdefg"));
    }
}
