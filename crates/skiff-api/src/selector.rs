//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=` spell
//! them and as `metav1.LabelSelector` objects (`spec.selector`) hold them.
//!
//! Parsing follows upstream's grammar and validation exactly, so a selector that
//! upstream refuses with 400 BadRequest is refused here with a
//! [`SelectorError`], and one it accepts matches the same objects:
//!
//! ```
//! use std::collections::BTreeMap;
//! use skiff_api::selector::LabelSelector;
//!
//! let sel = LabelSelector::parse("app=web, tier in (front,back), !canary").unwrap();
//! let labels = BTreeMap::from([("app".to_string(), "web".to_string()),
//!                              ("tier".to_string(), "front".to_string())]);
//! assert!(sel.matches(&labels));
//! assert_eq!(sel.to_string(), "app=web,!canary,tier in (back,front)");
//! ```
//!
//! Field selectors name fields whose values the registry knows per type; which
//! fields a type supports is the caller's business ([`FieldSelector::fields`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};

/// Why a selector was refused. The API server answers 400 BadRequest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The label selector does not follow the grammar.
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    Syntax {
        /// The token found (empty at the end of the input).
        found: String,
        /// What the grammar allows there.
        expected: &'static str,
    },
    /// A label key is not a qualified name.
    #[error("key: Invalid value: \"{key}\": {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Upstream's explanation.
        reason: String,
    },
    /// A value is not a valid label value.
    #[error("values[{key}]: Invalid value: \"{value}\": {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value.
        value: String,
        /// Upstream's explanation.
        reason: String,
    },
    /// The number or form of values does not fit the operator.
    #[error("values: Invalid value for key \"{key}\": {reason}")]
    InvalidValues {
        /// The key of the requirement.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `matchExpressions` operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{0:?} is not a valid label selector operator")]
    UnknownOperator(String),
    /// A `metav1.LabelSelector` object of the wrong shape.
    #[error("invalid label selector object: {0}")]
    MalformedObject(&'static str),
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector.
        selector: String,
        /// The term that failed.
        term: String,
    },
    /// A backslash in a field selector value escapes something other than `\`,
    /// `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value holds an unescaped `,` or `=`.
    #[error("invalid field selector: unescaped character in value: {0:?}")]
    UnescapedRune(char),
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `k=v`
    Equals,
    /// `k==v`
    DoubleEquals,
    /// `k!=v` (also true when the label is absent)
    NotEquals,
    /// `k in (a,b)`
    In,
    /// `k notin (a,b)` (also true when the label is absent)
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
    /// `k>n`, integers only
    GreaterThan,
    /// `k<n`, integers only
    LessThan,
}

/// One condition of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated, as upstream keeps them.
    values: Vec<String>,
}

impl Requirement {
    /// Builds and validates a requirement as upstream's `NewRequirement` does.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Requirement, SelectorError> {
        let key = key.into();
        validate_label_key(&key)?;
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        let invalid = |reason| SelectorError::InvalidValues {
            key: key.clone(),
            reason,
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(invalid(
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                return Err(invalid(
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(invalid(
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(invalid(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return Err(invalid(
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
            _ => {}
        }
        for value in &values {
            if let Some(reason) = label_value_error(value) {
                return Err(SelectorError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                    reason,
                });
            }
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted and deduplicated.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &impl Labels) -> bool {
        let value = labels.label(&self.key);
        let listed = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(listed),
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Equals => write!(f, "{}={one}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={one}", self.key),
            Operator::NotEquals => write!(f, "{}!={one}", self.key),
            Operator::GreaterThan => write!(f, "{}>{one}", self.key),
            Operator::LessThan => write!(f, "{}<{one}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// Anything labels can be looked up in.
pub trait Labels {
    /// The value of label `key`, if set.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// A JSON labels map (`metadata.labels`); non-string values are not labels.
impl Labels for Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

/// A JSON labels map; `null` or a missing map has no labels.
impl Labels for Value {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key, as upstream sorts them.
    requirements: Vec<Requirement>,
    /// A null `metav1.LabelSelector`, which selects nothing.
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches everything (an empty selector string).
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// The selector that matches nothing (a null `metav1.LabelSelector`).
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the string form, e.g. `app=web,tier in (a,b),!canary`.
    pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
        let tokens = lex(input);
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
        };
        Ok(LabelSelector::from_requirements(parser.parse()?))
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels` plus
    /// `matchExpressions`). `null` selects nothing and `{}` everything, as
    /// upstream's `LabelSelectorAsSelector` has it.
    pub fn from_label_selector(selector: &Value) -> Result<LabelSelector, SelectorError> {
        let object = match selector {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(object) => object,
            _ => return Err(SelectorError::MalformedObject("not an object")),
        };
        let mut requirements = Vec::new();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let value = value.as_str().ok_or(SelectorError::MalformedObject(
                        "matchLabels values must be strings",
                    ))?;
                    requirements.push(Requirement::new(
                        key.clone(),
                        Operator::Equals,
                        [value.to_string()],
                    )?);
                }
            }
            Some(_) => return Err(SelectorError::MalformedObject("matchLabels is not a map")),
        }
        match object.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(expressions)) => {
                for expression in expressions {
                    requirements.push(expression_requirement(expression)?);
                }
            }
            Some(_) => {
                return Err(SelectorError::MalformedObject(
                    "matchExpressions is not a list",
                ));
            }
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> LabelSelector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &impl Labels) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The single value `label` must have, if the selector pins it (`=`, `==`,
    /// or `in` with one value): lets callers narrow a list by an index.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [one]) => Some(one),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// One `matchExpressions` entry as a requirement.
fn expression_requirement(expression: &Value) -> Result<Requirement, SelectorError> {
    let key =
        expression
            .get("key")
            .and_then(Value::as_str)
            .ok_or(SelectorError::MalformedObject(
                "matchExpressions[].key is required",
            ))?;
    let operator = match expression.get("operator").and_then(Value::as_str) {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        other => {
            return Err(SelectorError::UnknownOperator(
                other.unwrap_or("").to_string(),
            ));
        }
    };
    let values = match expression.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(SelectorError::MalformedObject(
                "matchExpressions[].values must be strings",
            ))?,
        Some(_) => {
            return Err(SelectorError::MalformedObject(
                "matchExpressions[].values is not a list",
            ));
        }
    };
    Requirement::new(key, operator, values)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    End,
    Identifier(&'a str),
    In,
    NotIn,
    OpenPar,
    ClosedPar,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
}

impl Token<'_> {
    /// How the token reads in an error message.
    fn text(self) -> String {
        match self {
            Token::End => String::new(),
            Token::Identifier(s) => s.to_string(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::OpenPar => "(".into(),
            Token::ClosedPar => ")".into(),
            Token::Comma => ",".into(),
            Token::Bang => "!".into(),
            Token::Equals => "=".into(),
            Token::DoubleEquals => "==".into(),
            Token::NotEquals => "!=".into(),
            Token::GreaterThan => ">".into(),
            Token::LessThan => "<".into(),
        }
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens, ending with [`Token::End`].
fn lex(input: &str) -> Vec<Token<'_>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_whitespace(bytes[i]) {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else {
            tokens.push(Token::End);
            return tokens;
        };
        if is_special(b) {
            let next = bytes.get(i + 1).copied();
            let (token, len) = match (b, next) {
                (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
                (b'!', Some(b'=')) => (Token::NotEquals, 2),
                (b'=', _) => (Token::Equals, 1),
                (b'!', _) => (Token::Bang, 1),
                (b'(', _) => (Token::OpenPar, 1),
                (b')', _) => (Token::ClosedPar, 1),
                (b',', _) => (Token::Comma, 1),
                (b'>', _) => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            tokens.push(token);
            i += len;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_special(bytes[i]) && !is_whitespace(bytes[i]) {
            i += 1;
        }
        // Only ASCII bytes end a word, so `start..i` is on char boundaries.
        let word = input.get(start..i).unwrap_or_default();
        tokens.push(match word {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        });
    }
}

/// Upstream's recursive-descent parser over the token list.
struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    pos: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Token<'a> {
        self.tokens.get(self.pos).copied().unwrap_or(Token::End)
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        self.pos += 1;
        token
    }

    /// The identifier text of a token in value position.
    fn value(token: Token<'a>) -> Option<&'a str> {
        match token {
            Token::Identifier(s) => Some(s),
            Token::In => Some("in"),
            Token::NotIn => Some("notin"),
            _ => None,
        }
    }

    fn syntax(found: Token<'_>, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            found: found.text(),
            expected,
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let token = self.peek();
            if token == Token::End {
                return Ok(requirements);
            }
            if token != Token::Bang && Self::value(token).is_none() {
                return Err(Self::syntax(token, "!, identifier, or 'end of string'"));
            }
            requirements.push(self.requirement()?);
            match self.next() {
                Token::End => return Ok(requirements),
                Token::Comma => {
                    let after = self.peek();
                    if after != Token::Bang && Self::value(after).is_none() {
                        return Err(Self::syntax(after, "identifier after ','"));
                    }
                }
                other => return Err(Self::syntax(other, "',' or 'end of string'")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.next();
        let negated = token == Token::Bang;
        if negated {
            token = self.next();
        }
        let key = Self::value(token).ok_or_else(|| Self::syntax(token, "identifier"))?;
        validate_label_key(key)?;
        if matches!(self.peek(), Token::End | Token::Comma) {
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(key, operator, []);
        }
        if negated {
            // `!key` must stand alone.
            let found = self.peek();
            return Err(Self::syntax(found, "',' or 'end of string'"));
        }
        let operator = match self.next() {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            other => return Err(Self::syntax(other, "in, notin, =, ==, !=, gt, lt")),
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, operator, values)
    }

    /// `(a,b,...)`; empty entries stand for the empty value, as upstream has it.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next();
        if open != Token::OpenPar {
            return Err(Self::syntax(open, "'('"));
        }
        let mut values = Vec::new();
        match self.peek() {
            Token::ClosedPar => {
                self.next();
                return Ok(vec![String::new()]);
            }
            Token::Comma => {}
            token if Self::value(token).is_some() => {}
            other => return Err(Self::syntax(other, "',', ')' or identifier")),
        }
        loop {
            let token = self.next();
            if let Some(value) = Self::value(token) {
                values.push(value.to_string());
                match self.peek() {
                    Token::Comma => continue,
                    Token::ClosedPar => {
                        self.next();
                        return Ok(values);
                    }
                    other => return Err(Self::syntax(other, "',' or ')'")),
                }
            }
            if token != Token::Comma {
                return Err(Self::syntax(token, "',', or identifier"));
            }
            // A comma: an empty value before it, and after it if `)` or `,` follows.
            if values.is_empty() {
                values.push(String::new());
            }
            match self.peek() {
                Token::ClosedPar => {
                    self.next();
                    values.push(String::new());
                    return Ok(values);
                }
                Token::Comma => values.push(String::new()),
                _ => {}
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; absent means empty.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        let token = self.next();
        Self::value(token)
            .map(str::to_string)
            .ok_or_else(|| Self::syntax(token, "identifier"))
    }
}

const LABEL_NAME_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, ≤ 253.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let edge =
                |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            edge(b.first())
                && edge(b.last())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Validates a label key: an optional DNS-subdomain prefix and `/`, then a name
/// of at most 63 characters.
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |reason: String| SelectorError::InvalidKey {
        key: key.to_string(),
        reason,
    };
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err(invalid("prefix part must be non-empty".into()));
            }
            if !is_dns1123_subdomain(prefix) {
                return Err(invalid(
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case \
                     alphanumeric characters, '-' or '.', and must start and end with an \
                     alphanumeric character"
                        .into(),
                ));
            }
            name
        }
        _ => {
            return Err(invalid(format!(
                "a valid label key {NAME_RULE} with an optional DNS subdomain prefix and '/'"
            )));
        }
    };
    if name.is_empty() {
        return Err(invalid("name part must be non-empty".into()));
    }
    if name.len() > LABEL_NAME_MAX {
        return Err(invalid(format!(
            "name part must be no more than {LABEL_NAME_MAX} characters"
        )));
    }
    if !is_qualified_name_part(name) {
        return Err(invalid(format!("name part {NAME_RULE}")));
    }
    Ok(())
}

/// Why `value` is no valid label value (at most 63 characters, empty or a
/// qualified name part).
fn label_value_error(value: &str) -> Option<String> {
    if value.len() > LABEL_NAME_MAX {
        return Some(format!("must be no more than {LABEL_NAME_MAX} characters"));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        return Some(format!(
            "a valid label must be an empty string or {}",
            NAME_RULE.trim_start_matches("must ")
        ));
    }
    None
}

/// Validates a label value.
pub fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
    match label_value_error(value) {
        Some(reason) => Err(SelectorError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// A field selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `field=value` or `field==value`
    Equals,
    /// `field!=value`
    NotEquals,
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field path, e.g. `metadata.name` or `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The value, unescaped.
    pub value: String,
}

impl FieldRequirement {
    fn matches(&self, actual: Option<&str>) -> bool {
        let equal = actual.unwrap_or("") == self.value;
        match self.operator {
            FieldOperator::Equals => equal,
            FieldOperator::NotEquals => !equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A parsed field selector: all terms must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d` (also `a==b`); values escape `\`, `,` and `=` with a
    /// backslash. Field names are not checked: the caller knows which fields the
    /// type supports.
    pub fn parse(input: &str) -> Result<FieldSelector, SelectorError> {
        let terms = split_terms(input);
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let (field, operator, raw) =
                split_term(term).ok_or_else(|| SelectorError::FieldTerm {
                    selector: input.to_string(),
                    term: term.to_string(),
                })?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_field_value(raw)?,
            });
        }
        // Upstream sorts the raw terms; sorting the printed terms gives the same
        // matches and a canonical order that survives printing and reparsing.
        requirements.sort_by_cached_key(ToString::to_string);
        Ok(FieldSelector { requirements })
    }

    /// The terms, sorted by their printed form.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The field names the selector uses, to check against a type's fields.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object matches, given the value of each field (`None` reads
    /// as the empty string, as upstream's field sets have it).
    pub fn matches<F, S>(&self, mut lookup: F) -> bool
    where
        F: FnMut(&str) -> Option<S>,
        S: AsRef<str>,
    {
        self.requirements.iter().all(|r| {
            let actual = lookup(&r.field);
            r.matches(actual.as_ref().map(AsRef::as_ref))
        })
    }

    /// The value `field` must equal, if a term pins it.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// Splits on commas that no backslash escapes.
fn split_terms(input: &str) -> Vec<&str> {
    if input.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&input[start..i]);
            start = i + 1;
        }
    }
    terms.push(&input[start..]);
    terms
}

/// Splits a term at its first operator (`!=` and `==` before `=`).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// Escapes `\`, `,` and `=` in a field selector value.
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reverses [`escape_field_value`], refusing bad escapes and bare `,`/`=`.
pub fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ ('\\' | ',' | '=')) => out.push(next),
                Some(other) => return Err(SelectorError::InvalidEscape(format!("\\{other}"))),
                None => return Err(SelectorError::InvalidEscape("\\".into())),
            },
            ',' | '=' => return Err(SelectorError::UnescapedRune(c)),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
