//! `networking.k8s.io/v1` ServiceCIDR and IPAddress: the objects behind Service
//! cluster IP allocation.
//!
//! Both are newer than the legacy IP fields of Services and Pods, so upstream
//! holds them to the strict IP rules: no leading zeros, no IPv4-mapped IPv6, and
//! only the canonical spelling (an IPAddress is named by its IP, and two
//! spellings of one address must never be two objects).

use std::net::IpAddr;

use serde_json::Value;

use super::field::{Path, arr_of, get, invalid, invalid_each, required, same, str_of};
use super::names::dns1123_subdomain_errors;
use crate::registry::FieldError;

/// Messages for an IP address under the strict rules (`IsValidIP`).
pub(crate) fn strict_ip_errors(value: &str) -> Vec<String> {
    let Ok(ip) = value.parse::<IpAddr>() else {
        return vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()];
    };
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return vec!["must not be an IPv4-mapped IPv6 address".to_string()];
    }
    let canonical = ip.to_string();
    if canonical != value {
        return vec![format!("must be in canonical form (\"{canonical}\")")];
    }
    Vec::new()
}

/// Messages for a subnet CIDR under the strict rules (`IsValidCIDR`).
pub(crate) fn strict_cidr_errors(value: &str) -> Vec<String> {
    let parsed = value.split_once('/').and_then(|(ip, bits)| {
        let ip = ip.parse::<IpAddr>().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let digits_ok = !bits.is_empty()
            && bits.bytes().all(|c| c.is_ascii_digit())
            && (bits.len() == 1 || !bits.starts_with('0'));
        let bits: u32 = bits.parse().ok().filter(|b| digits_ok && *b <= max)?;
        Some((ip, bits))
    });
    let Some((ip, bits)) = parsed else {
        return vec!["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()];
    };
    let masked = match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                return vec!["must not have an IPv4-mapped IPv6 address".to_string()];
            }
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    if masked != ip {
        return vec!["must not have bits set beyond the prefix length".to_string()];
    }
    let canonical = format!("{ip}/{bits}");
    if canonical != value {
        return vec![format!("must be in canonical form (\"{canonical}\")")];
    }
    Vec::new()
}

/// The name rule of IPAddress: the canonical IP it stands for.
pub(crate) fn name_is_ip_address(name: &str, _prefix: bool) -> Vec<String> {
    strict_ip_errors(name)
}

/// Messages for a path segment (`IsValidPathSegmentName`).
fn path_segment_errors(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value == "." || value == ".." {
        out.push(format!("may not be '{value}'"));
    }
    for c in ['/', '%'] {
        if value.contains(c) {
            out.push(format!("may not contain '{c}'"));
        }
    }
    out
}

/// `ServiceCIDR`
pub(crate) fn validate_service_cidr(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let path = Path::new("spec").child("cidrs");
    let cidrs = arr_of(spec, "cidrs");
    match old {
        None => validate_cidrs(errs, spec, &path),
        Some(old) => {
            let old_cidrs = arr_of(get(old, "spec"), "cidrs");
            if old_cidrs.len() == cidrs.len() {
                for (i, (new, old)) in cidrs.iter().zip(old_cidrs).enumerate() {
                    if new != old {
                        errs.push(invalid(&path.index(i), new, "field is immutable"));
                    }
                }
            } else if old_cidrs.len() == 1 && cidrs.len() == 2 {
                // Adding the second family turns the range dual-stack.
                if cidrs[0] != old_cidrs[0] {
                    errs.push(invalid(&path.index(0), &cidrs[0], "field is immutable"));
                }
                validate_cidrs(errs, spec, &path);
            } else {
                errs.push(invalid(&path, get(spec, "cidrs"), "field is immutable"));
            }
        }
    }
}

fn validate_cidrs(errs: &mut Vec<FieldError>, spec: &Value, path: &Path) {
    let cidrs = arr_of(spec, "cidrs");
    if cidrs.is_empty() {
        errs.push(required(path, "at least one CIDR required"));
        return;
    }
    if cidrs.len() > 2 {
        errs.push(invalid(path, spec, "may only hold up to 2 values"));
        return;
    }
    let family = |c: &Value| {
        let ip = c.as_str()?.split_once('/')?.0.parse::<IpAddr>().ok()?;
        Some(ip.is_ipv4())
    };
    if cidrs.len() == 2 {
        let dual = matches!(
            (family(&cidrs[0]), family(&cidrs[1])),
            (Some(a), Some(b)) if a != b
        );
        if !dual {
            errs.push(invalid(
                path,
                spec,
                "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64",
            ));
            return;
        }
    }
    for (i, cidr) in cidrs.iter().enumerate() {
        let cidr = cidr.as_str().unwrap_or("");
        invalid_each(errs, &path.index(i), cidr, strict_cidr_errors(cidr));
    }
}

/// `IPAddress`
pub(crate) fn validate_ip_address(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = get(obj, "spec");
    let path = Path::new("spec").child("parentRef");
    let parent = get(spec, "parentRef");
    if let Some(old) = old {
        let old_parent = get(get(old, "spec"), "parentRef");
        if !same(parent, old_parent) {
            errs.push(invalid(&path, parent, "field is immutable"));
        }
        return;
    }
    if !parent.is_object() {
        errs.push(required(&path, ""));
        return;
    }
    let group = str_of(parent, "group");
    if !group.is_empty() {
        invalid_each(
            errs,
            &path.child("group"),
            group,
            dns1123_subdomain_errors(group),
        );
    }
    for key in ["resource", "name"] {
        let value = str_of(parent, key);
        if value.is_empty() {
            errs.push(required(&path.child(key), ""));
        } else {
            invalid_each(errs, &path.child(key), value, path_segment_errors(value));
        }
    }
    let namespace = str_of(parent, "namespace");
    if !namespace.is_empty() {
        invalid_each(
            errs,
            &path.child("namespace"),
            namespace,
            path_segment_errors(namespace),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::field::testing;
    use serde_json::json;

    #[test]
    fn strict_ips() {
        assert!(strict_ip_errors("10.43.0.1").is_empty());
        assert!(strict_ip_errors("fd00::1").is_empty());
        assert_eq!(
            strict_ip_errors("10.43.0.256"),
            ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
        );
        assert_eq!(
            strict_ip_errors("::ffff:10.0.0.1"),
            ["must not be an IPv4-mapped IPv6 address"]
        );
        assert_eq!(
            strict_ip_errors("fd00:0::1"),
            ["must be in canonical form (\"fd00::1\")"]
        );
    }

    #[test]
    fn strict_cidrs() {
        assert!(strict_cidr_errors("10.43.0.0/16").is_empty());
        assert!(strict_cidr_errors("fd00:43::/112").is_empty());
        assert_eq!(
            strict_cidr_errors("10.43.0.1/16"),
            ["must not have bits set beyond the prefix length"]
        );
        for bad in ["10.43.0.0", "10.43.0.0/33", "10.43.0.0/016", "x/8"] {
            assert_eq!(
                strict_cidr_errors(bad),
                ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"],
                "{bad}"
            );
        }
    }

    #[test]
    fn service_cidr_rules() {
        let run = |obj: Value, old: Option<Value>| {
            testing::run(validate_service_cidr, &obj, old.as_ref())
        };
        assert!(run(json!({"spec": {"cidrs": ["10.43.0.0/16"]}}), None).is_empty());
        assert_eq!(
            run(json!({"spec": {}}), None),
            ["spec.cidrs: Required value: at least one CIDR required"]
        );
        assert_eq!(
            run(
                json!({"spec": {"cidrs": ["10.43.0.0/16", "10.44.0.0/16"]}}),
                None
            ),
            [
                "spec.cidrs: Invalid value: {\"cidrs\":[\"10.43.0.0/16\",\"10.44.0.0/16\"]}: may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64"
            ]
        );
        let old = json!({"spec": {"cidrs": ["10.43.0.0/16"]}});
        assert_eq!(
            run(
                json!({"spec": {"cidrs": ["10.44.0.0/16"]}}),
                Some(old.clone())
            ),
            ["spec.cidrs[0]: Invalid value: \"10.44.0.0/16\": field is immutable"]
        );
        assert!(
            run(
                json!({"spec": {"cidrs": ["10.43.0.0/16", "fd00:43::/112"]}}),
                Some(old)
            )
            .is_empty()
        );
    }

    #[test]
    fn ip_address_rules() {
        let run =
            |obj: Value, old: Option<Value>| testing::run(validate_ip_address, &obj, old.as_ref());
        let good = json!({"spec": {"parentRef": {"group": "", "resource": "services",
            "namespace": "default", "name": "web"}}});
        assert!(run(good.clone(), None).is_empty());
        assert_eq!(run(json!({}), None), ["spec.parentRef: Required value"]);
        assert_eq!(
            run(
                json!({"spec": {"parentRef": {"resource": "", "name": "a/b"}}}),
                None
            ),
            [
                "spec.parentRef.resource: Required value",
                "spec.parentRef.name: Invalid value: \"a/b\": may not contain '/'"
            ]
        );
        let moved = json!({"spec": {"parentRef": {"group": "", "resource": "services",
            "namespace": "default", "name": "other"}}});
        assert_eq!(
            run(moved, Some(good.clone())),
            [
                "spec.parentRef: Invalid value: {\"group\":\"\",\"name\":\"other\",\"namespace\":\"default\",\"resource\":\"services\"}: field is immutable"
            ]
        );
        assert!(run(good.clone(), Some(good)).is_empty());
        assert!(name_is_ip_address("10.43.0.7", false).is_empty());
        assert!(!name_is_ip_address("web", false).is_empty());
    }
}
