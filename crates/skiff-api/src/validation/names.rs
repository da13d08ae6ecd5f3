//! Name and key checks shared by every type: the API server also uses them for path
//! names and `generateName`.
//!
//! Each `*_errors` function returns upstream's messages (empty when valid), because the
//! messages are part of what clients show; the `is_*` functions are the boolean form.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const CONFIG_KEY_MAX: usize = 253;
const PORT_NAME_MAX: usize = 15;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const WILDCARD_DNS1123_SUBDOMAIN_FMT: &str =
    "\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Builds upstream's "regex failed" sentence: the description, the examples and the
/// regular expression that a value must match.
fn regex_error(description: &str, regex: &str, examples: &[&str]) -> String {
    let mut msg = format!("{description} (");
    if !examples.is_empty() {
        msg.push_str("e.g. ");
        for (i, example) in examples.iter().enumerate() {
            if i > 0 {
                msg.push_str(" or ");
            }
            msg.push('\'');
            msg.push_str(example);
            msg.push_str("', ");
        }
    }
    msg.push_str("regex used for validation is '");
    msg.push_str(regex);
    msg.push_str("')");
    msg
}

fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(value: &str) -> bool {
    let b = value.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1035_label(value: &str) -> bool {
    matches_dns1123_label(value) && value.as_bytes()[0].is_ascii_lowercase()
}

fn matches_dns1123_subdomain(value: &str) -> bool {
    value.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(value: &str) -> bool {
    let b = value.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Messages for a value that must be a lowercase RFC 1123 label (at most 63 characters).
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns1123_label(value) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// Whether `value` is a lowercase RFC 1123 label (namespaces, container names, ...).
pub fn is_dns1123_label(value: &str) -> bool {
    dns1123_label_errors(value).is_empty()
}

/// Messages for a value that must be a lowercase RFC 1123 subdomain (at most 253 characters).
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Whether `value` is a lowercase RFC 1123 subdomain, the name rule of most kinds.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    dns1123_subdomain_errors(value).is_empty()
}

/// Messages for a value that must be a wildcard subdomain such as `*.example.com`.
pub fn wildcard_dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    let ok = value
        .strip_prefix("*.")
        .is_some_and(matches_dns1123_subdomain);
    if !ok {
        errs.push(regex_error(
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character",
            WILDCARD_DNS1123_SUBDOMAIN_FMT,
            &["*.example.com"],
        ));
    }
    errs
}

/// Messages for a value that must be an RFC 1035 label (Service names).
pub fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Whether `value` is an RFC 1035 label: like a DNS-1123 label, but starting with a letter.
pub fn is_dns1035_label(value: &str) -> bool {
    dns1035_label_errors(value).is_empty()
}

/// Messages for a qualified name: an optional DNS subdomain prefix and `/`, then a name
/// part of at most 63 characters. Label keys and annotation keys use this rule.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "{} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"],
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            )
        ));
    }
    errs
}

/// Whether `value` is a qualified name such as `app.kubernetes.io/name`.
pub fn is_qualified_name(value: &str) -> bool {
    qualified_name_errors(value).is_empty()
}

/// Messages for a label value: empty, or at most 63 characters of `[-A-Za-z0-9_.]`
/// starting and ending with an alphanumeric character.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Whether `value` may be used as a label value.
pub fn is_valid_label_value(value: &str) -> bool {
    label_value_errors(value).is_empty()
}

/// Messages for a ConfigMap or Secret key.
pub fn config_map_key_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > CONFIG_KEY_MAX {
        errs.push(max_len_error(CONFIG_KEY_MAX));
    }
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errs.push("must not be '.'".to_string());
    } else if value == ".." {
        errs.push("must not be '..'".to_string());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Messages for an IANA service name used as a port name (`http`, `metrics`).
pub fn port_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > PORT_NAME_MAX {
        errs.push(max_len_error(PORT_NAME_MAX));
    }
    if !value
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !value.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if value.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if value.starts_with('-') || value.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Messages for a port number, which must lie in 1..=65535.
pub fn port_num_errors(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// Messages for an environment variable name: any printable ASCII but `=`, as
/// upstream accepts since relaxed environment variable validation went GA.
pub fn env_var_name_errors(value: &str) -> Vec<String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| (b' '..=b'~').contains(&c) && c != b'=');
    if ok {
        Vec::new()
    } else {
        vec![
            "a valid environment variable name must consist only of printable ASCII characters other than '='"
                .to_string(),
        ]
    }
}

/// Messages for a percentage string such as `25%`.
pub fn percent_errors(value: &str) -> Vec<String> {
    let ok = value
        .strip_suffix('%')
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()));
    if ok {
        Vec::new()
    } else {
        vec![regex_error(
            "a valid percent string must be a numeric string followed by an ending '%'",
            "[0-9]+%",
            &["1%", "93%"],
        )]
    }
}

/// Messages for an IP address (IPv4 without leading zeros, or IPv6).
pub fn ip_errors(value: &str) -> Vec<String> {
    if value.parse::<std::net::IpAddr>().is_ok() {
        Vec::new()
    } else {
        vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()]
    }
}

/// Messages for a CIDR such as `10.0.0.0/8`.
pub fn cidr_errors(value: &str) -> Vec<String> {
    let ok = value.split_once('/').is_some_and(|(ip, bits)| {
        let max = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => return false,
        };
        !bits.is_empty()
            && bits.bytes().all(|c| c.is_ascii_digit())
            && (bits.len() == 1 || !bits.starts_with('0'))
            && bits.parse::<u32>().is_ok_and(|b| b <= max)
    });
    if ok {
        Vec::new()
    } else {
        vec!["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_label() {
        for ok in ["a", "abc", "a-1", "0", "123-abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert_eq!(
            dns1123_label_errors("Foo")[0],
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
        assert_eq!(
            dns1123_label_errors(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
    }

    #[test]
    fn dns1123_subdomain() {
        for ok in ["example.com", "a", "a.b-c.d", "kube-system"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "Foo_Bar", "a/b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert_eq!(
            dns1123_subdomain_errors("Foo_Bar"),
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()]
        );
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn dns1035_label() {
        assert!(is_dns1035_label("my-svc"));
        assert!(!is_dns1035_label("1svc"));
        assert!(!is_dns1035_label("my.svc"));
        assert!(dns1035_label_errors("1a")[0].starts_with("a DNS-1035 label"));
    }

    #[test]
    fn qualified_names() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "MyName",
            "my_name",
            "example.com/a",
        ] {
            assert!(is_qualified_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "Example.com/a",
            &"a".repeat(64),
        ] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        assert_eq!(
            qualified_name_errors("/a"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert!(qualified_name_errors("a/b/c")[0].starts_with("a qualified name must"));
        assert!(qualified_name_errors("Bad_/x")[0].starts_with("prefix part a lowercase RFC 1123"));
    }

    #[test]
    fn label_values() {
        assert!(is_valid_label_value(""));
        assert!(is_valid_label_value("v1.2_3-x"));
        assert!(!is_valid_label_value("-x"));
        assert!(!is_valid_label_value("a b"));
        assert!(!is_valid_label_value(&"a".repeat(64)));
    }

    #[test]
    fn config_keys() {
        assert!(config_map_key_errors("app.properties").is_empty());
        assert!(config_map_key_errors(".env").is_empty());
        assert_eq!(
            config_map_key_errors(".."),
            vec!["must not be '..'".to_string()]
        );
        assert_eq!(
            config_map_key_errors("..a"),
            vec!["must not start with '..'".to_string()]
        );
        assert_eq!(config_map_key_errors("a/b").len(), 1);
    }

    #[test]
    fn port_names_and_numbers() {
        assert!(port_name_errors("http").is_empty());
        assert!(port_name_errors("http-metrics2").is_empty());
        assert_eq!(
            port_name_errors("8080"),
            vec!["must contain at least one letter (a-z)".to_string()]
        );
        assert_eq!(
            port_name_errors("a--b"),
            vec!["must not contain consecutive hyphens".to_string()]
        );
        assert_eq!(port_name_errors("averyveryverylongname").len(), 1);
        assert!(port_num_errors(80).is_empty());
        assert_eq!(port_num_errors(0).len(), 1);
        assert_eq!(port_num_errors(65536).len(), 1);
    }

    #[test]
    fn env_names_ips_cidrs_percents() {
        assert!(env_var_name_errors("MY_VAR").is_empty());
        assert!(env_var_name_errors("my.var-1").is_empty());
        assert_eq!(env_var_name_errors("A=B").len(), 1);
        assert_eq!(env_var_name_errors("").len(), 1);
        assert!(ip_errors("10.0.0.1").is_empty());
        assert!(ip_errors("::1").is_empty());
        assert_eq!(ip_errors("10.0.0.256").len(), 1);
        assert!(cidr_errors("10.0.0.0/8").is_empty());
        assert!(cidr_errors("2001:db8::/64").is_empty());
        assert_eq!(cidr_errors("10.0.0.0/33").len(), 1);
        assert_eq!(cidr_errors("10.0.0.0").len(), 1);
        assert!(percent_errors("25%").is_empty());
        assert_eq!(percent_errors("25").len(), 1);
        assert!(wildcard_dns1123_subdomain_errors("*.example.com").is_empty());
        assert_eq!(wildcard_dns1123_subdomain_errors("*example.com").len(), 1);
    }
}
