use k8s_openapi::api::core::v1::NamespaceStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn namespace(name: &str, phase: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NamespaceStatus {
            phase: Some(phase.into()),
            ..NamespaceStatus::default()
        }),
    }
}

fn wanted() -> Vec<String> {
    ServiceAccountConfig::default().service_accounts
}

#[test]
fn an_active_namespace_without_default_gets_one() {
    let missing = missing_service_accounts(&namespace("team", "Active"), &wanted(), |_| false);
    let [account] = missing.as_slice() else {
        panic!("one ServiceAccount, got {missing:?}");
    };
    assert_eq!(account.metadata.name.as_deref(), Some("default"));
    assert_eq!(account.metadata.namespace.as_deref(), Some("team"));
    let present = missing_service_accounts(&namespace("team", "Active"), &wanted(), |name| {
        name == "default"
    });
    assert!(present.is_empty());
}

#[test]
fn terminating_namespaces_get_nothing() {
    assert!(
        missing_service_accounts(&namespace("old", "Terminating"), &wanted(), |_| false).is_empty()
    );
    let mut deleting = namespace("old", "Active");
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    assert!(missing_service_accounts(&deleting, &wanted(), |_| false).is_empty());
    assert_eq!(root_ca_plan(&deleting, None, CA), RootCaPlan::Keep);
}

#[test]
fn a_missing_root_ca_is_created_with_its_description() {
    let RootCaPlan::Create(config_map) = root_ca_plan(&namespace("team", "Active"), None, CA)
    else {
        panic!("expected a create");
    };
    assert_eq!(
        config_map.metadata.name.as_deref(),
        Some("kube-root-ca.crt")
    );
    assert_eq!(config_map.metadata.namespace.as_deref(), Some("team"));
    assert_eq!(
        config_map.data,
        Some(BTreeMap::from([("ca.crt".to_string(), CA.to_string())]))
    );
    assert_eq!(
        config_map
            .annotations()
            .get("kubernetes.io/description")
            .map(String::as_str),
        Some(DESCRIPTION)
    );
}

#[test]
fn an_edited_root_ca_is_reset_keeping_the_users_metadata() {
    let ns = namespace("team", "Active");
    let RootCaPlan::Create(mut published) = root_ca_plan(&ns, None, CA) else {
        panic!("expected a create");
    };
    published.metadata.resource_version = Some("9".into());
    assert_eq!(root_ca_plan(&ns, Some(&published), CA), RootCaPlan::Keep);

    let mut edited = published.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("extra".into(), "x".into());
    edited.annotations_mut().remove(DESCRIPTION_ANNOTATION);
    edited.labels_mut().insert("owner".into(), "me".into());
    let RootCaPlan::Update(reset) = root_ca_plan(&ns, Some(&edited), CA) else {
        panic!("expected an update");
    };
    assert_eq!(reset.data, published.data);
    assert_eq!(reset.metadata.resource_version.as_deref(), Some("9"));
    assert_eq!(reset.labels().get("owner").map(String::as_str), Some("me"));
    assert_eq!(
        reset
            .annotations()
            .get(DESCRIPTION_ANNOTATION)
            .map(String::as_str),
        Some(DESCRIPTION)
    );
    // A rotated CA is published too.
    assert!(matches!(
        root_ca_plan(&ns, Some(&published), "other"),
        RootCaPlan::Update(_)
    ));
}

/// The controllers' traffic against a fake API server.
mod controller {
    use serde_json::{Value, json};
    use skiff_testing::FakeApi;

    use super::*;

    fn to_json<T: serde::Serialize>(value: T) -> Value {
        serde_json::to_value(value).expect("serializable")
    }

    fn writes_of(api: &FakeApi) -> Vec<(String, String)> {
        let mut summary: Vec<(String, String)> = api
            .writes()
            .iter()
            .map(|w| (w.method.clone(), w.path.clone()))
            .collect();
        summary.sort();
        summary
    }

    async fn run_for_a_while<F>(
        factory: InformerFactory,
        controller: F,
        shutdown: CancellationToken,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let informers = tokio::spawn(factory.run(shutdown.clone()));
        let controller = tokio::spawn(controller);
        tokio::time::sleep(Duration::from_secs(2)).await;
        shutdown.cancel();
        controller.await.expect("controller");
        informers.await.expect("informers");
    }

    #[tokio::test(start_paused = true)]
    async fn creates_default_service_accounts_where_missing() {
        let existing = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "a"},
        });
        let api = FakeApi::new(vec![
            (
                "/api/v1/namespaces",
                vec![
                    to_json(namespace("a", "Active")),
                    to_json(namespace("b", "Active")),
                    to_json(namespace("c", "Terminating")),
                ],
            ),
            ("/api/v1/serviceaccounts", vec![existing]),
        ]);
        let client = api.client();
        let shutdown = CancellationToken::new();
        let mut factory = InformerFactory::new(client.clone());
        let controller = start(
            &mut factory,
            client,
            ServiceAccountConfig::default(),
            shutdown.clone(),
        );
        run_for_a_while(factory, controller, shutdown).await;
        assert_eq!(
            writes_of(&api),
            [(
                "POST".to_string(),
                "/api/v1/namespaces/b/serviceaccounts".to_string()
            )]
        );
        assert_eq!(api.writes()[0].body["metadata"]["name"], "default");
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_the_root_ca_where_missing_or_edited() {
        let config_map = |ns: &str, ca: &str| {
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "resourceVersion": "3",
                    "annotations": {"kubernetes.io/description": DESCRIPTION}},
                "data": {"ca.crt": ca},
            })
        };
        let api = FakeApi::new(vec![
            (
                "/api/v1/namespaces",
                vec![
                    to_json(namespace("a", "Active")),
                    to_json(namespace("b", "Active")),
                    to_json(namespace("c", "Active")),
                ],
            ),
            (
                "/api/v1/configmaps",
                vec![config_map("a", CA), config_map("b", "stale")],
            ),
        ]);
        let client = api.client();
        let shutdown = CancellationToken::new();
        let mut factory = InformerFactory::new(client.clone());
        let config = RootCaConfig { ca_pem: CA.into() };
        let controller = start_root_ca_publisher(&mut factory, client, config, shutdown.clone());
        run_for_a_while(factory, controller, shutdown).await;
        assert_eq!(
            writes_of(&api),
            [
                (
                    "POST".to_string(),
                    "/api/v1/namespaces/c/configmaps".to_string()
                ),
                (
                    "PUT".to_string(),
                    "/api/v1/namespaces/b/configmaps/kube-root-ca.crt".to_string()
                ),
            ]
        );
        let writes = api.writes();
        assert!(writes.iter().all(|w| w.body["data"]["ca.crt"] == CA));
    }
}
