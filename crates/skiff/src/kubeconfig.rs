//! The admin kubeconfig written to `DATA_DIR/kubeconfig` on every start.
//!
//! Credentials are embedded (`*-data` fields, base64 PEM) rather than referenced
//! by path, so the file keeps working when copied to another machine.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use crate::pki::Pki;

/// The cluster, user and context name in the generated kubeconfig.
const NAME: &str = "skiff";
/// The user entry's name.
const USER: &str = "skiff-admin";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Config<'a> {
    api_version: &'a str,
    kind: &'a str,
    clusters: [Named<'a, Cluster>; 1],
    users: [Named<'a, User>; 1],
    contexts: [Named<'a, Context<'a>>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    item: T,
}

#[derive(Serialize)]
struct Cluster {
    cluster: ClusterInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterInfo {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User {
    user: UserInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserInfo {
    client_certificate_data: String,
    client_key_data: String,
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextInfo<'a>,
}

#[derive(Serialize)]
struct ContextInfo<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// Render an admin kubeconfig for the API server at `server` (an `https://` URL).
pub fn render(server: &str, pki: &Pki) -> Result<String, serde_saphyr::ser::Error> {
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: NAME,
            item: Cluster {
                cluster: ClusterInfo {
                    server: server.to_string(),
                    certificate_authority_data: STANDARD.encode(&pki.ca_cert),
                },
            },
        }],
        users: [Named {
            name: USER,
            item: User {
                user: UserInfo {
                    client_certificate_data: STANDARD.encode(&pki.admin_cert),
                    client_key_data: STANDARD.encode(&pki.admin_key),
                },
            },
        }],
        contexts: [Named {
            name: NAME,
            item: Context {
                context: ContextInfo {
                    cluster: NAME,
                    user: USER,
                },
            },
        }],
        current_context: NAME,
    };
    serde_saphyr::to_string(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_embedded_credentials() {
        let pki = Pki {
            ca_cert: "CA".into(),
            ca_key: "CK".into(),
            server_cert: "SC".into(),
            server_key: "SK".into(),
            admin_cert: "AC".into(),
            admin_key: "AK".into(),
            kubelet_client_cert: "KC".into(),
            kubelet_client_key: "KK".into(),
            kubelet_serving_cert: "KSC".into(),
            kubelet_serving_key: "KSK".into(),
        };
        let text = render("https://127.0.0.1:6443", &pki).unwrap();
        let expected = "\
apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Q0E=
users:
- name: skiff-admin
  user:
    client-certificate-data: QUM=
    client-key-data: QUs=
contexts:
- name: skiff
  context:
    cluster: skiff
    user: skiff-admin
current-context: skiff
";
        assert_eq!(text, expected);
    }
}
