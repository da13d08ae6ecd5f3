use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn parses_every_operator() {
    let sel = parse("a=1, b==2,c!=3 ,d in (x, y),e notin (z),f,!g,h>5,i<7");
    let ops: Vec<(&str, Operator, Vec<&str>)> = sel
        .requirements()
        .iter()
        .map(|r| {
            (
                r.key(),
                r.operator(),
                r.values().iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("a", Operator::Equals, vec!["1"]),
            ("b", Operator::DoubleEquals, vec!["2"]),
            ("c", Operator::NotEquals, vec!["3"]),
            ("d", Operator::In, vec!["x", "y"]),
            ("e", Operator::NotIn, vec!["z"]),
            ("f", Operator::Exists, vec![]),
            ("g", Operator::DoesNotExist, vec![]),
            ("h", Operator::GreaterThan, vec!["5"]),
            ("i", Operator::LessThan, vec!["7"]),
        ]
    );
    assert_eq!(
        sel.to_string(),
        "a=1,b==2,c!=3,d in (x,y),e notin (z),f,!g,h>5,i<7"
    );
}

#[test]
fn matching_follows_upstream() {
    let pod = labels(&[("app", "web"), ("tier", "front"), ("n", "10")]);
    let cases = [
        ("", true),
        ("app=web", true),
        ("app==web", true),
        ("app=db", false),
        ("app!=db", true),
        ("missing!=x", true),
        ("tier in (front,back)", true),
        ("tier notin (front)", false),
        ("missing notin (a)", true),
        ("missing in (a)", false),
        ("app", true),
        ("!app", false),
        ("!missing", true),
        ("n>9", true),
        ("n<10", false),
        ("app>1", false),
        ("missing>1", false),
        ("app=web,tier=back", false),
        ("app=", false),
        ("missing=", false),
        ("x in (in,notin)", false),
    ];
    for (sel, want) in cases {
        assert_eq!(parse(sel).matches(&pod), want, "{sel}");
    }
    let empty_value = labels(&[("flag", "")]);
    assert!(parse("flag=").matches(&empty_value));
    assert!(parse("flag in ()").matches(&empty_value));
    assert!(parse("flag in (,a)").matches(&empty_value));
}

#[test]
fn matches_json_label_maps() {
    let sel = parse("app=web,!debug");
    assert!(sel.matches(&json!({"app": "web"})));
    assert!(!sel.matches(&json!({"app": "web", "debug": "1"})));
    assert!(!sel.matches(&json!(null)));
    assert!(parse("").matches(&json!(null)));
    let obj = json!({"metadata": {"labels": {"app": "web"}}});
    assert!(sel.matches(&obj["metadata"]["labels"]));
}

#[test]
fn syntax_errors() {
    for bad in [
        "a=b c",
        "a in b",
        "a in (b",
        "a in (b c)",
        "a,",
        ",a",
        "!a=b",
        "a b",
        "a=(b)",
        "=a",
        "a notin",
        "!",
        "a (b)",
        "a>",
        "a>b",
        "a<1.5",
    ] {
        assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
    }
    assert_eq!(
        LabelSelector::parse("a=b c").unwrap_err().to_string(),
        "unable to parse requirement: found 'c', expected: ',' or 'end of string'"
    );
}

#[test]
fn validates_keys_and_values() {
    let long = "a".repeat(64);
    for bad in [
        "-a=b".to_string(),
        "a-=b".to_string(),
        "a/b/c=d".to_string(),
        "/a=b".to_string(),
        "Example.com/a=b".to_string(),
        "example.com/=b".to_string(),
        format!("{long}=b"),
        "a=-b".to_string(),
        "a=b!".to_string(),
        format!("a={long}"),
        "a in (ok, -bad)".to_string(),
        "ключ=b".to_string(),
    ] {
        assert!(
            matches!(
                LabelSelector::parse(&bad),
                Err(SelectorError::InvalidKey { .. } | SelectorError::InvalidValue { .. })
                    | Err(SelectorError::Syntax { .. })
            ),
            "{bad:?} should be refused"
        );
    }
    let ok = format!("example.com/{}=v", "a".repeat(63));
    assert!(LabelSelector::parse(&ok).is_ok());
    assert!(LabelSelector::parse("app.kubernetes.io/name=my_app-1.0").is_ok());
    assert!(matches!(
        LabelSelector::parse("a/b/c"),
        Err(SelectorError::InvalidKey { key, .. }) if key == "a/b/c"
    ));
}

#[test]
fn requires_exact_match() {
    let sel = parse("a=1,b in (2),c in (3,4),d!=5");
    assert_eq!(sel.requires_exact_match("a"), Some("1"));
    assert_eq!(sel.requires_exact_match("b"), Some("2"));
    assert_eq!(sel.requires_exact_match("c"), None);
    assert_eq!(sel.requires_exact_match("d"), None);
    assert_eq!(sel.requires_exact_match("z"), None);
}

#[test]
fn converts_metav1_label_selectors() {
    let sel = LabelSelector::from_label_selector(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "Exists", "values": []},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
        ],
    }))
    .unwrap();
    assert_eq!(
        sel.to_string(),
        "app=web,!canary,env notin (dev),tier in (back,front),zone"
    );
    assert!(sel.matches(&labels(&[("app", "web"), ("tier", "back"), ("zone", "a")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "back")])));

    let everything = LabelSelector::from_label_selector(&json!({})).unwrap();
    assert!(everything.is_everything());
    assert!(everything.matches(&labels(&[])));
    let nothing = LabelSelector::from_label_selector(&json!(null)).unwrap();
    assert!(!nothing.matches(&labels(&[])));
    assert!(!nothing.is_everything());

    for (bad, want) in [
        (
            json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}),
            "UnknownOperator",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            "InvalidValues",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            "InvalidValues",
        ),
        (json!({"matchLabels": {"a": 1}}), "MalformedObject"),
        (json!({"matchLabels": {"-a": "x"}}), "InvalidKey"),
        (json!([]), "MalformedObject"),
    ] {
        let err = LabelSelector::from_label_selector(&bad).unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{bad}: {err:?}");
    }
}

#[test]
fn field_selectors_parse_and_match() {
    let sel =
        FieldSelector::parse("spec.nodeName=node-1,status.phase!=Failed,metadata.name==x").unwrap();
    assert_eq!(
        sel.fields().collect::<Vec<_>>(),
        ["metadata.name", "spec.nodeName", "status.phase"]
    );
    let pod = |field: &str| match field {
        "metadata.name" => Some("x"),
        "spec.nodeName" => Some("node-1"),
        "status.phase" => Some("Running"),
        _ => None,
    };
    assert!(sel.matches(pod));
    assert!(!sel.matches(|f: &str| if f == "status.phase" {
        Some("Failed")
    } else {
        pod(f)
    }));
    assert_eq!(sel.requires_exact_match("spec.nodeName"), Some("node-1"));
    assert_eq!(sel.requires_exact_match("status.phase"), None);
    // A missing field reads as empty.
    let unscheduled = FieldSelector::parse("spec.nodeName=").unwrap();
    assert!(unscheduled.matches(|_: &str| None::<String>));
    assert!(FieldSelector::parse("").unwrap().is_empty());
    assert!(FieldSelector::parse(",,").unwrap().is_empty());
}

#[test]
fn field_selector_escaping() {
    let sel = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
    assert_eq!(sel.requirements()[0].value, r"a,b=c\d");
    assert_eq!(sel.to_string(), r"metadata.name=a\,b\=c\\d");
    assert_eq!(
        FieldSelector::parse(r"a=b\x"),
        Err(SelectorError::InvalidEscape(r"\x".into()))
    );
    assert_eq!(
        FieldSelector::parse(r"a=b\"),
        Err(SelectorError::InvalidEscape(r"\".into()))
    );
    assert_eq!(
        FieldSelector::parse("a=b=c"),
        Err(SelectorError::UnescapedRune('='))
    );
    assert!(matches!(
        FieldSelector::parse("a,b=c"),
        Err(SelectorError::FieldTerm { term, .. }) if term == "a"
    ));
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,10}[a-zA-Z0-9])?"
}

fn arb_key() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){0,2}"),
        arb_name(),
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(prefix) => format!("{prefix}/{name}"),
            None => name,
        })
}

fn arb_requirement() -> impl Strategy<Value = Requirement> {
    let value = prop_oneof![Just(String::new()), arb_name()];
    (
        arb_key(),
        prop_oneof![
            Just(Operator::Equals),
            Just(Operator::DoubleEquals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
            Just(Operator::GreaterThan),
            Just(Operator::LessThan),
        ],
        prop::collection::vec(value, 1..4),
        0..i32::MAX,
    )
        .prop_map(|(key, op, values, n)| {
            let values = match op {
                Operator::Exists | Operator::DoesNotExist => vec![],
                Operator::In | Operator::NotIn => values,
                Operator::GreaterThan | Operator::LessThan => vec![n.to_string()],
                _ => values.into_iter().take(1).collect(),
            };
            Requirement::new(key, op, values).expect("generated requirements are valid")
        })
}

proptest! {
    #[test]
    fn label_selector_display_round_trips(reqs in prop::collection::vec(arb_requirement(), 0..5)) {
        let sel = LabelSelector::from_requirements(reqs);
        let text = sel.to_string();
        prop_assert_eq!(LabelSelector::parse(&text).unwrap(), sel);
    }

    #[test]
    fn field_selector_display_round_trips(
        terms in prop::collection::vec(("[a-z]{1,3}(\\.[a-z]{1,3})?", any::<bool>(), "[a-z,=\\\\ ]{0,6}"), 0..4),
    ) {
        let text = terms
            .iter()
            .map(|(field, eq, value)| {
                format!("{field}{}{}", if *eq { "=" } else { "!=" }, escape_field_value(value))
            })
            .collect::<Vec<_>>()
            .join(",");
        let sel = FieldSelector::parse(&text).unwrap();
        prop_assert_eq!(sel.requirements().len(), terms.len());
        prop_assert_eq!(FieldSelector::parse(&sel.to_string()).unwrap(), sel);
    }

    #[test]
    fn parsers_never_panic(input in "[a-z=!(),<> \\\\/.0-9-]{0,30}") {
        let _ = LabelSelector::parse(&input);
        let _ = FieldSelector::parse(&input);
    }
}
