//! Resource quota arithmetic and measurement, shared by the API server's
//! quota admission and the quota controller (upstream's `quota/v1` helpers and
//! its core evaluators).
//!
//! Both sides must measure an object identically: admission charges the usage
//! of each new object to `status.used` (and, on update, how much it grew),
//! and the controller later recomputes
//! `status.used` from every object in the namespace. If the two measured
//! differently, every recomputation would move the totals under the clients'
//! feet. So the measuring lives here, on objects in their JSON form, and both
//! call it.
//!
//! Amounts are kept exactly, in thousandths (`100m` is 100, `1Gi` is
//! 1073741824000), and print back in upstream's canonical form, keeping the
//! binary suffixes of the first operand of a sum (`512Mi + 512Mi` prints `1Gi`).

mod usage;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::quantity::{Format, Quantity};

pub use usage::{Evaluator, ScopeRequirement, count_name, pod_container_resources, quota_scopes};

/// An exact resource amount.
#[derive(Debug, Clone, Copy)]
pub struct Amount {
    /// The value × 1000.
    milli: i128,
    /// Printed with binary suffixes (`Ki`, `Mi`, ...) when whole.
    binary: bool,
}

impl Amount {
    /// A whole number, printed in decimal.
    pub fn from_int(n: i64) -> Amount {
        Amount {
            milli: i128::from(n) * 1000,
            binary: false,
        }
    }

    /// Zero.
    pub fn zero() -> Amount {
        Amount::from_int(0)
    }

    /// Parses a quantity string.
    pub fn parse(s: &str) -> Option<Amount> {
        Quantity::parse(s).ok().map(Amount::from)
    }

    /// The value × 1000.
    pub fn milli(&self) -> i128 {
        self.milli
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.milli < 0
    }

    /// The sum; keeps this amount's suffix family (a zero takes the other's,
    /// as upstream's `Quantity.Add`).
    pub fn plus(self, other: Amount) -> Amount {
        Amount {
            milli: self.milli.saturating_add(other.milli),
            binary: self.family(other),
        }
    }

    /// The difference; suffix family as for [`Amount::plus`].
    pub fn minus(self, other: Amount) -> Amount {
        Amount {
            milli: self.milli.saturating_sub(other.milli),
            binary: self.family(other),
        }
    }

    fn family(self, other: Amount) -> bool {
        if self.is_zero() {
            other.binary
        } else {
            self.binary
        }
    }

    /// Rounded up to a whole number (storage is charged in whole bytes).
    pub fn round_up(self) -> Amount {
        Amount {
            milli: div_ceil(self.milli, 1000) * 1000,
            binary: self.binary,
        }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { q } else { q + 1 }
}

impl From<Quantity> for Amount {
    fn from(q: Quantity) -> Amount {
        let milli = q.milli_value();
        let milli = if milli == i64::MAX || milli == i64::MIN {
            i128::from(q.value()) * 1000
        } else {
            i128::from(milli)
        };
        Amount {
            milli,
            binary: q.format() == Format::BinarySI,
        }
    }
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli.cmp(&other.milli)
    }
}

impl fmt::Display for Amount {
    /// Upstream's canonical quantity form (`1`, `500m`, `2k`, `1Gi`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = 1024 * 1000;
        let text = if self.binary && self.milli != 0 && self.milli % kib == 0 {
            format!("{}Ki", self.milli / kib)
        } else {
            format!("{}m", self.milli)
        };
        match Quantity::parse(&text) {
            Ok(q) => write!(f, "{q}"),
            Err(_) => f.write_str(&text),
        }
    }
}

/// Amounts by resource name (`pods`, `requests.cpu`, `count/secrets`), sorted.
pub type ResourceList = BTreeMap<String, Amount>;

/// Reads a JSON resource map (`{"cpu": "1", "pods": 2}`); entries that are
/// not quantities are skipped (validation reports them).
pub fn parse_list(value: &Value) -> ResourceList {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, v)| {
            let amount = match v {
                Value::String(s) => Amount::parse(s),
                Value::Number(n) => Amount::parse(&n.to_string()),
                _ => None,
            }?;
            Some((name.clone(), amount))
        })
        .collect()
}

/// The JSON form of a resource list: canonical quantity strings.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(name, amount)| (name.clone(), Value::String(amount.to_string())))
            .collect::<Map<String, Value>>(),
    )
}

/// `a + b` per resource; resources in only one list are kept as they are.
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut result = a.clone();
    for (name, amount) in b {
        result
            .entry(name.clone())
            .and_modify(|sum| *sum = sum.plus(*amount))
            .or_insert(*amount);
    }
    result
}

/// `a - b` per resource of `a`; resources only in `b` are subtracted from zero.
pub fn subtract(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut result = a.clone();
    for (name, amount) in b {
        result
            .entry(name.clone())
            .and_modify(|diff| *diff = diff.minus(*amount))
            .or_insert_with(|| Amount::zero().minus(*amount));
    }
    result
}

/// `a - b` per resource of `a`, never below zero; resources only in `b` are
/// left out (upstream's `SubtractWithNonNegativeResult`: what an update
/// grows by, for an object whose other uses shrank).
pub fn subtract_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    a.iter()
        .map(|(name, amount)| {
            let diff = b.get(name).map_or(*amount, |old| amount.minus(*old));
            let diff = if diff.is_negative() {
                Amount {
                    milli: 0,
                    binary: amount.binary,
                }
            } else {
                diff
            };
            (name.clone(), diff)
        })
        .collect()
}

/// The entries of `list` whose names are in `names`.
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a str>) -> ResourceList {
    names
        .into_iter()
        .filter_map(|name| list.get(name).map(|a| (name.to_string(), *a)))
        .collect()
}

/// The names of the resources in `a` that exceed their amount in `b`
/// (resources missing from `b` never exceed); empty when `a <= b`.
pub fn exceeded(a: &ResourceList, b: &ResourceList) -> Vec<String> {
    a.iter()
        .filter(|(name, amount)| b.get(*name).is_some_and(|limit| *amount > limit))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The names of the resources below zero.
pub fn negative(list: &ResourceList) -> Vec<String> {
    list.iter()
        .filter(|(_, a)| a.is_negative())
        .map(|(n, _)| n.clone())
        .collect()
}

/// `list` without its zero entries.
pub fn remove_zeros(list: &ResourceList) -> ResourceList {
    list.iter()
        .filter(|(_, a)| !a.is_zero())
        .map(|(n, a)| (n.clone(), *a))
        .collect()
}

/// Upstream's rendering in quota messages: `pods=1,requests.cpu=500m`.
pub fn pretty_print(list: &ResourceList) -> String {
    list.iter()
        .map(|(name, amount)| format!("{name}={amount}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(v: Value) -> ResourceList {
        parse_list(&v)
    }

    #[test]
    fn amounts_print_canonically_and_keep_binary_suffixes() {
        let half = Amount::parse("512Mi").unwrap();
        assert_eq!(half.plus(half).to_string(), "1Gi");
        assert_eq!(Amount::zero().plus(half).to_string(), "512Mi");
        assert_eq!(
            Amount::parse("1").unwrap().plus(half).to_string(),
            "536870913"
        );
        assert_eq!(Amount::parse("1000m").unwrap().to_string(), "1");
        assert_eq!(
            Amount::parse("250m")
                .unwrap()
                .plus(Amount::parse("250m").unwrap())
                .to_string(),
            "500m"
        );
        assert_eq!(Amount::parse("2000").unwrap().to_string(), "2k");
        assert_eq!(Amount::parse("1.5Gi").unwrap().to_string(), "1536Mi");
        assert_eq!(Amount::zero().minus(Amount::from_int(2)).to_string(), "-2");
        assert_eq!(Amount::parse("100m").unwrap().round_up().to_string(), "1");
        assert_eq!(Amount::parse("10Pi").unwrap().to_string(), "10Pi");
    }

    #[test]
    fn list_arithmetic_matches_upstream() {
        let used = list(json!({"pods": "2", "requests.cpu": "500m"}));
        let delta = list(json!({"pods": 1, "requests.cpu": "1", "count/pods": "1"}));
        let sum = add(&used, &delta);
        assert_eq!(
            to_json(&sum),
            json!({"count/pods": "1", "pods": "3", "requests.cpu": "1500m"})
        );
        let diff = subtract(&used, &delta);
        assert_eq!(negative(&diff), vec!["count/pods", "requests.cpu"]);
        let hard = list(json!({"pods": "2", "requests.cpu": "2"}));
        assert_eq!(exceeded(&sum, &hard), vec!["pods"]);
        assert!(exceeded(&used, &hard).is_empty());
        assert_eq!(
            pretty_print(&mask(&sum, ["pods", "requests.cpu", "absent"])),
            "pods=3,requests.cpu=1500m"
        );
        let grown = subtract_non_negative(
            &list(json!({"requests.storage": "3Gi", "pods": "1", "cpu": "1"})),
            &list(json!({"requests.storage": "1Gi", "pods": "1", "cpu": "2", "gone": "5"})),
        );
        assert_eq!(
            to_json(&grown),
            json!({"cpu": "0", "pods": "0", "requests.storage": "2Gi"})
        );
        let zeros = list(json!({"pods": "0", "cpu": "1"}));
        assert_eq!(remove_zeros(&zeros).len(), 1);
    }

    #[test]
    fn unparsable_entries_are_skipped() {
        let l = list(json!({"cpu": "lots", "memory": "1Gi", "pods": null}));
        assert_eq!(l.keys().collect::<Vec<_>>(), ["memory"]);
    }
}
