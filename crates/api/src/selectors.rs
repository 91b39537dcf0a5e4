//! Label selectors and field selectors, as upstream apimachinery's `pkg/labels` and `pkg/fields`.
//!
//! * Label selectors: [`parse_label_selector`] reads the `?labelSelector=` string form (equality
//!   and set-based requirements); [`from_label_selector_json`] reads a `metav1.LabelSelector`
//!   object the way `metav1.LabelSelectorAsSelector` does (a null selector selects nothing, an
//!   empty one everything). [`LabelSelector`]'s `Display` is the canonical string form (what
//!   `Scale.status.selector` and `kubectl get -o wide` show).
//! * Field selectors: [`parse_field_selector`] reads `?fieldSelector=`; [`field_value`] answers
//!   what value a kind exposes for a field label, with each kind's supported set from upstream's
//!   field label conversion functions and registry `GetAttrs`.
//!
//! Error texts follow upstream word for word, because kubectl prints them as they come back in
//! the 400 `Status`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};

/// Why a selector was rejected. None of these are retryable: the request must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector string does not parse, or a key/value in it is invalid; the text is
    /// upstream's (`unable to parse requirement: …`, `found ',', expected: …`).
    #[error("{0}")]
    InvalidLabelSelector(String),
    /// A `metav1.LabelSelector` object names an operator other than In/NotIn/Exists/DoesNotExist.
    #[error("{} is not a valid label selector operator", go_quote(.0))]
    InvalidLabelSelectorOperator(String),
    /// A `metav1.LabelSelector` object is not shaped as the API defines it.
    #[error("invalid label selector: {field}: {reason}")]
    MalformedLabelSelector { field: String, reason: String },
    /// The field selector string does not parse (upstream's `invalid selector: …` texts).
    #[error("{0}")]
    InvalidFieldSelector(String),
    /// The kind has its own field label conversion and this label is not in it.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    /// The kind only supports the object meta labels (upstream's
    /// `DefaultMetaV1FieldSelectorConversion`).
    #[error("{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"", go_quote(.0))]
    UnknownFieldLabel(String),
}

/// Go's `%q` for the strings that appear in upstream's messages.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Label key and value validation (apimachinery pkg/util/validation, v1.33 texts).
// ---------------------------------------------------------------------------------------------

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, without a regex engine.
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

/// One RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            ok(first) && ok(last) && b.iter().all(|c| ok(c) || *c == b'-')
        }
        _ => false,
    }
}

fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !value.split('.').all(is_dns1123_label) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream `IsQualifiedName`: the rules for a label key.
fn qualified_name_errors(value: &str) -> Vec<String> {
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
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream `IsValidLabelValue`.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// A `field.Invalid` error rendered as upstream does (`<path>: Invalid value: "v": detail`).
fn field_invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {}: {detail}", go_quote(value))
}

/// `field.Invalid` whose bad value is a string list, which upstream renders as JSON.
fn field_invalid_list(path: &str, values: &[String], detail: &str) -> String {
    let json = serde_json::to_string(values).unwrap_or_else(|_| "[]".to_string());
    format!("{path}: Invalid value: {json}: {detail}")
}

/// Several field errors aggregated as upstream's `utilerrors.NewAggregate` prints them.
fn aggregate(errs: Vec<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors.
// ---------------------------------------------------------------------------------------------

/// A label selector requirement operator (apimachinery `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement of a label selector: a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement with upstream `NewRequirement`'s validation (its errors name the
    /// `key` and `values[i]` paths as upstream's do).
    pub fn new(
        key: &str,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        let mut errs = Vec::new();
        let key_errs = qualified_name_errors(key);
        if !key_errs.is_empty() {
            errs.push(field_invalid("key", key, &key_errs.join("; ")));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errs.push(field_invalid_list(
                    "values",
                    &values,
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(field_invalid_list(
                    "values",
                    &values,
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(field_invalid_list(
                    "values",
                    &values,
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(field_invalid_list(
                        "values",
                        &values,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(field_invalid(
                            &format!("values[{i}]"),
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errs = label_value_errors(v);
            if !value_errs.is_empty() {
                errs.push(field_invalid(
                    &format!("values[{i}][{key}]"),
                    v,
                    &value_errs.join("; "),
                ));
            }
        }
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            })
        } else {
            Err(SelectorError::InvalidLabelSelector(aggregate(errs)))
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Upstream `Requirement.Matches`.
    pub fn matches(&self, labels: &impl Labels) -> bool {
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => labels
                .lookup(&self.key)
                .is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn | Operator::NotEquals => labels
                .lookup(&self.key)
                .is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => labels.lookup(&self.key).is_some(),
            Operator::DoesNotExist => labels.lookup(&self.key).is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(have)) = labels.lookup(&self.key).map(str::parse::<i64>) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
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
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        // Upstream sorts the values on output without changing the selector.
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Anything labels can be looked up in.
pub trait Labels {
    fn lookup(&self, key: &str) -> Option<&str>;
}

impl Labels for Map<String, Value> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl Labels for BTreeMap<String, String> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// No labels at all (an object without `metadata.labels`).
struct NoLabels;

impl Labels for NoLabels {
    fn lookup(&self, _key: &str) -> Option<&str> {
        None
    }
}

/// A parsed label selector: the AND of its requirements, sorted by key as upstream keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    /// `None` is upstream's `labels.Nothing()` (what a null `metav1.LabelSelector` converts to).
    requirements: Option<Vec<Requirement>>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> LabelSelector {
        LabelSelector {
            requirements: Some(Vec::new()),
        }
    }

    /// The selector that matches no object.
    pub fn nothing() -> LabelSelector {
        LabelSelector { requirements: None }
    }

    /// Exact-match requirements for every entry of a map (upstream `SelectorFromSet`), e.g. a
    /// Service's or ReplicationController's `spec.selector`.
    pub fn from_map(map: &BTreeMap<String, String>) -> LabelSelector {
        let requirements = map
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            })
            .collect();
        LabelSelector {
            requirements: Some(requirements),
        }
    }

    /// True when the selector restricts nothing (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.as_ref().is_some_and(Vec::is_empty)
    }

    /// True for the null selector, which matches nothing.
    pub fn matches_nothing(&self) -> bool {
        self.requirements.is_none()
    }

    pub fn requirements(&self) -> &[Requirement] {
        self.requirements.as_deref().unwrap_or(&[])
    }

    pub fn matches(&self, labels: &impl Labels) -> bool {
        match &self.requirements {
            None => false,
            Some(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// Matches an object's `metadata.labels` (absent labels are an empty set).
    pub fn matches_object(&self, obj: &Value) -> bool {
        match obj.pointer("/metadata/labels").and_then(Value::as_object) {
            Some(labels) => self.matches(labels),
            None => self.matches(&NoLabels),
        }
    }

    /// The single value the selector pins `label` to, if any (upstream `RequiresExactMatch`).
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let req = self.requirements().iter().find(|r| r.key == label)?;
        match (req.operator, req.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> LabelSelector {
        // Stable, so requirements on one key keep the order they were given in.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements: Some(requirements),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the selector into tokens exactly as upstream's lexer does.
fn lex(input: &str) -> Vec<(Token, String)> {
    let b = input.as_bytes();
    let mut pos = 0;
    let mut items = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            items.push((Token::EndOfString, String::new()));
            return items;
        }
        if is_special_symbol(b[pos]) {
            // The longest run of special symbols that still forms an operator.
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            while pos < b.len() && is_special_symbol(b[pos]) {
                let candidate = &input[start..=pos];
                if let Some(tok) = keyword(candidate) {
                    last = Some((tok, pos + 1));
                } else if last.is_some() {
                    break;
                }
                pos += 1;
            }
            match last {
                Some((tok, end)) => {
                    items.push((tok, input[start..end].to_string()));
                    pos = end;
                }
                None => {
                    items.push((
                        Token::Error,
                        format!("error expected: keyword found '{}'", &input[start..pos]),
                    ));
                }
            }
        } else {
            let start = pos;
            while pos < b.len() && !is_special_symbol(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let word = &input[start..pos];
            let tok = match keyword(word) {
                Some(t) => t,
                None => Token::Identifier,
            };
            items.push((tok, word.to_string()));
        }
    }
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

impl Parser {
    fn item(&self, context: Context) -> (Token, String) {
        let (tok, lit) = self
            .items
            .get(self.position)
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        // 'in' and 'notin' are ordinary values where a value is expected: `x in (in)`.
        let tok = match (context, tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, t) => t,
        };
        (tok, lit)
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.item(context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.item(context);
        if self.position < self.items.len() {
            self.position += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, operator) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = operator {
            return Requirement::new(&key, op, Vec::new()).map_err(|e| e.to_string());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values).map_err(|e| e.to_string())
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut tok, mut literal) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, literal) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let errs = qualified_name_errors(&literal);
        if !errs.is_empty() {
            // Upstream validates the key here with a nil field path, which prints as "<nil>".
            return Err(field_invalid("<nil>", &literal, &errs.join("; ")));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list of (possibly empty) values; a set, returned sorted as upstream's
    /// `sets.String.List()` does.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut set = std::collections::BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit);
                    let (tok2, lit2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set.into_iter().collect()),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (tok2, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        set.insert(String::new());
                        return Ok(set.into_iter().collect());
                    }
                    if tok2 == Token::Comma {
                        self.consume(Context::Values);
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            return Ok(vec![lit]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

/// Parses the string form of a label selector (`?labelSelector=`), as upstream `labels.Parse`.
///
/// `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma-joined.
/// An empty string selects everything.
pub fn parse_label_selector(s: &str) -> Result<LabelSelector, SelectorError> {
    let mut parser = Parser {
        items: lex(s),
        position: 0,
    };
    let requirements = parser
        .parse()
        .map_err(SelectorError::InvalidLabelSelector)?;
    Ok(LabelSelector::from_requirements(requirements))
}

/// Converts a `metav1.LabelSelector` object as upstream `metav1.LabelSelectorAsSelector`: JSON
/// `null` selects nothing, `{}` everything.
pub fn from_label_selector_json(sel: &Value) -> Result<LabelSelector, SelectorError> {
    let malformed = |field: &str, reason: &str| SelectorError::MalformedLabelSelector {
        field: field.to_string(),
        reason: reason.to_string(),
    };
    let obj = match sel {
        Value::Null => return Ok(LabelSelector::nothing()),
        Value::Object(obj) => obj,
        _ => return Err(malformed("selector", "must be an object")),
    };
    let match_labels = match obj.get("matchLabels") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(malformed("matchLabels", "must be an object of strings")),
    };
    let match_expressions = match obj.get("matchExpressions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a),
        Some(_) => return Err(malformed("matchExpressions", "must be a list")),
    };
    let n_labels = match_labels.map_or(0, Map::len);
    let n_exprs = match_expressions.map_or(0, Vec::len);
    if n_labels + n_exprs == 0 {
        return Ok(LabelSelector::everything());
    }
    let mut requirements = Vec::with_capacity(n_labels + n_exprs);
    for (k, v) in match_labels.into_iter().flatten() {
        let v = v
            .as_str()
            .ok_or_else(|| malformed(&format!("matchLabels[{k}]"), "must be a string"))?;
        requirements.push(Requirement::new(k, Operator::Equals, vec![v.to_string()])?);
    }
    for (i, expr) in match_expressions.into_iter().flatten().enumerate() {
        let key = expr
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(&format!("matchExpressions[{i}].key"), "must be a string"))?;
        let op = expr
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let operator = match op {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(SelectorError::InvalidLabelSelectorOperator(
                    other.to_string(),
                ));
            }
        };
        let values = match expr.get("values") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(vals)) => vals
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    malformed(
                        &format!("matchExpressions[{i}].values"),
                        "must be a list of strings",
                    )
                })?,
            Some(_) => {
                return Err(malformed(
                    &format!("matchExpressions[{i}].values"),
                    "must be a list of strings",
                ));
            }
        };
        requirements.push(Requirement::new(key, operator, values)?);
    }
    Ok(LabelSelector::from_requirements(requirements))
}

/// Upstream `metav1.FormatLabelSelector`: the canonical string, `<none>` when it is empty (or
/// null), `<error>` when it does not convert.
pub fn format_label_selector(sel: &Value) -> String {
    match from_label_selector_json(sel) {
        Err(_) => "<error>".to_string(),
        Ok(s) => {
            let out = s.to_string();
            if out.is_empty() {
                "<none>".to_string()
            } else {
                out
            }
        }
    }
}

/// Upstream `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` for an empty map.
pub fn format_labels(map: Option<&Value>) -> String {
    let pairs: BTreeMap<&str, &str> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// Field selectors.
// ---------------------------------------------------------------------------------------------

/// A field selector term's operator (`=` and `==` are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    Equals,
    NotEquals,
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

/// A parsed field selector: the AND of its terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// True when the selector restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.terms
    }

    /// The value an `=` term pins `field` to, if any (upstream `RequiresExactMatch`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }

    /// The object name the selector pins (`metadata.name=`), for a single-key lookup.
    pub fn pinned_name(&self) -> Option<&str> {
        self.requires_exact_match("metadata.name")
    }

    /// The node a Pod selector pins (`spec.nodeName=`, or the legacy `spec.host=`), for the
    /// per-node index the agents' watches use.
    pub fn pinned_node_name(&self) -> Option<&str> {
        self.requires_exact_match("spec.nodeName")
            .or_else(|| self.requires_exact_match("spec.host"))
    }

    /// Checks every term is a field label the kind supports, as the API server does before it
    /// lists anything (upstream's field label conversion).
    pub fn validate(&self, group: &str, kind: &str) -> Result<(), SelectorError> {
        for t in &self.terms {
            supported_field(group, kind, &t.field)?;
        }
        Ok(())
    }

    /// Whether `obj` (of `group`/`kind`) satisfies every term. A supported field the object does
    /// not expose compares as the empty string, as upstream's `fields.Set.Get` does.
    pub fn matches(&self, group: &str, kind: &str, obj: &Value) -> Result<bool, SelectorError> {
        for t in &self.terms {
            let have = field_value(group, kind, obj, &t.field)?.unwrap_or_default();
            let ok = match t.operator {
                FieldOperator::Equals => have == t.value,
                FieldOperator::NotEquals => have != t.value,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", t.field, escape_field_value(&t.value))?;
        }
        Ok(())
    }
}

/// Upstream `fields.EscapeValue`: `\`, `,` and `=` are backslash-escaped in values.
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream `fields.UnescapeValue`.
fn unescape_field_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(SelectorError::InvalidFieldSelector(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    )));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                // Upstream prints the rune with %v, i.e. its code point.
                return Err(SelectorError::InvalidFieldSelector(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidFieldSelector(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

/// Splits on commas that are not backslash-escaped.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// The first operator in the term, trying `!=`, `==`, `=` at each position.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, value));
            }
        }
    }
    None
}

/// Parses the string form of a field selector (`?fieldSelector=`), as upstream
/// `fields.ParseSelector`. Terms are kept sorted by their text, as upstream does.
pub fn parse_field_selector(s: &str) -> Result<FieldSelector, SelectorError> {
    let mut parts = split_terms(s);
    parts.sort_unstable();
    let mut terms = Vec::with_capacity(parts.len());
    for part in parts {
        if part.is_empty() {
            continue;
        }
        let Some((lhs, operator, rhs)) = split_term(part) else {
            return Err(SelectorError::InvalidFieldSelector(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            )));
        };
        terms.push(FieldRequirement {
            field: lhs.to_string(),
            operator,
            value: unescape_field_value(rhs)?,
        });
    }
    Ok(FieldSelector { terms })
}

/// How a kind's field labels are accepted (upstream `AddFieldLabelConversionFunc` per kind;
/// kinds without one use `DefaultMetaV1FieldSelectorConversion`).
fn supported_field(group: &str, kind: &str, field: &str) -> Result<(), SelectorError> {
    let own: &[&str] = match (group, kind) {
        ("", "Pod") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            // Old v1 clients send spec.host; upstream converts it to spec.nodeName.
            "spec.host",
        ],
        ("", "Node") => &["metadata.name", "spec.unschedulable"],
        ("", "ReplicationController") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        // events.k8s.io/v1 maps its own names onto the core Event's (pkg/apis/events/v1).
        ("events.k8s.io", "Event") => &[
            "reason",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reportingController",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        ("", "Namespace") => &["status.phase", "metadata.name"],
        ("", "Secret") => &["type", "metadata.namespace", "metadata.name"],
        ("apps", "ReplicaSet") => &["metadata.name", "metadata.namespace", "status.replicas"],
        ("apps", "StatefulSet") => &["metadata.name", "metadata.namespace", "status.successful"],
        ("batch", "Job") => &["metadata.name", "metadata.namespace", "status.successful"],
        _ => {
            return match field {
                "metadata.name" | "metadata.namespace" => Ok(()),
                _ => Err(SelectorError::UnknownFieldLabel(field.to_string())),
            };
        }
    };
    if own.contains(&field) {
        Ok(())
    } else {
        Err(SelectorError::FieldLabelNotSupported(field.to_string()))
    }
}

fn str_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn int_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

fn bool_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// The value `obj` (of `group`/`kind`) exposes for the field label `field`, as upstream's
/// registry `GetAttrs` builds it. `Ok(None)` is a label the kind accepts but does not fill in
/// (it then compares as the empty string); an unsupported label is an error with upstream's
/// text.
pub fn field_value(
    group: &str,
    kind: &str,
    obj: &Value,
    field: &str,
) -> Result<Option<String>, SelectorError> {
    supported_field(group, kind, field)?;
    let value = match (group, kind, field) {
        (_, _, "metadata.name") => str_at(obj, "/metadata/name"),
        // Cluster-scoped objects have no namespace; upstream's set then lacks the key, which
        // compares as "".
        (_, _, "metadata.namespace") => str_at(obj, "/metadata/namespace"),
        ("", "Pod", "spec.nodeName" | "spec.host") => str_at(obj, "/spec/nodeName"),
        ("", "Pod", "spec.restartPolicy") => str_at(obj, "/spec/restartPolicy"),
        ("", "Pod", "spec.schedulerName") => str_at(obj, "/spec/schedulerName"),
        ("", "Pod", "spec.serviceAccountName") => {
            // v1's deprecated serviceAccount is an alias when serviceAccountName is empty.
            let name = str_at(obj, "/spec/serviceAccountName");
            if name.is_empty() {
                str_at(obj, "/spec/serviceAccount")
            } else {
                name
            }
        }
        ("", "Pod", "spec.hostNetwork") => bool_at(obj, "/spec/hostNetwork"),
        ("", "Pod", "status.phase") => str_at(obj, "/status/phase"),
        ("", "Pod", "status.podIP") => {
            // v1 → internal conversion: status.podIP wins over podIPs[0] when both are set.
            let ip = str_at(obj, "/status/podIP");
            if ip.is_empty() {
                str_at(obj, "/status/podIPs/0/ip")
            } else {
                ip
            }
        }
        ("", "Pod", "status.nominatedNodeName") => str_at(obj, "/status/nominatedNodeName"),
        ("", "Node", "spec.unschedulable") => bool_at(obj, "/spec/unschedulable"),
        ("", "ReplicationController", "status.replicas")
        | ("apps", "ReplicaSet", "status.replicas") => int_at(obj, "/status/replicas"),
        ("batch", "Job", "status.successful") => int_at(obj, "/status/succeeded"),
        ("", "Namespace", "status.phase") => str_at(obj, "/status/phase"),
        ("", "Secret", "type") => str_at(obj, "/type"),
        ("", "Event", f) => match f.strip_prefix("involvedObject.") {
            Some(sub) => str_at(obj, &format!("/involvedObject/{sub}")),
            None => match f {
                "reason" => str_at(obj, "/reason"),
                "type" => str_at(obj, "/type"),
                "reportingComponent" => str_at(obj, "/reportingComponent"),
                "source" => {
                    let component = str_at(obj, "/source/component");
                    if component.is_empty() {
                        str_at(obj, "/reportingComponent")
                    } else {
                        component
                    }
                }
                _ => return Ok(None),
            },
        },
        ("events.k8s.io", "Event", f) => match f.strip_prefix("regarding.") {
            Some(sub) => str_at(obj, &format!("/regarding/{sub}")),
            None => match f {
                "reason" => str_at(obj, "/reason"),
                "type" => str_at(obj, "/type"),
                "reportingController" => str_at(obj, "/reportingController"),
                _ => return Ok(None),
            },
        },
        // Accepted by the conversion but absent from the kind's field set (status.podIPs on
        // Pods, status.successful on StatefulSets): upstream compares them as "".
        _ => return Ok(None),
    };
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_prints_canonical_forms() {
        let cases = [
            ("", ""),
            ("a=b", "a=b"),
            ("a==b", "a==b"),
            ("a!=b", "a!=b"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("b, !a", "!a,b"),
            (
                "  app = web , tier in (front,back) ",
                "app=web,tier in (back,front)",
            ),
            ("a=", "a="),
            ("a>1,b<2", "a>1,b<2"),
            ("example.com/app=web", "example.com/app=web"),
            ("x in (in)", "x in (in)"),
        ];
        for (input, want) in cases {
            let sel = parse_label_selector(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_malformed_selectors_with_upstream_messages() {
        let cases = [
            ("x=a,", "found '', expected: identifier after ','"),
            (
                "x in (a",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "x in a",
                "unable to parse requirement: found 'a' expected: '('",
            ),
            (
                "=a",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            (
                "x y",
                "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("x=a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "x notin",
                "unable to parse requirement: found '' expected: '('",
            ),
        ];
        for (input, want) in cases {
            match parse_label_selector(input) {
                Err(e) => assert_eq!(e.to_string(), want, "input {input:?}"),
                Ok(s) => panic!("{input:?} parsed as {s}"),
            }
        }
    }

    fn parse_err(input: &str) -> String {
        match parse_label_selector(input) {
            Ok(sel) => panic!("{input:?} parsed as {sel}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn validates_keys_and_values() {
        let err = parse_err("-bad=x");
        assert_eq!(
            err,
            "unable to parse requirement: <nil>: Invalid value: \"-bad\": name part must consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or \
             'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        let err = parse_err("app=a b");
        assert_eq!(err, "found 'b', expected: ',' or 'end of string'");
        let err = parse_err("app=-x");
        assert!(
            err.starts_with("unable to parse requirement: values[0][app]: Invalid value: \"-x\": a valid label must be"),
            "{err}"
        );
        let long = "a".repeat(64);
        let err = parse_err(&format!("k={long}"));
        assert!(err.contains("must be no more than 63 characters"), "{err}");
        let err = parse_err("Example.com/x");
        assert!(
            err.contains("prefix part a lowercase RFC 1123 subdomain"),
            "{err}"
        );
        let err = parse_err("a/b/c");
        assert!(err.contains("a qualified name must consist"), "{err}");
    }

    #[test]
    fn matches_labels() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("tier in (front,back)", true),
            ("tier notin (front)", false),
            ("missing notin (x)", true),
            ("missing in (x)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("n>4", true),
            ("n<5", false),
            ("app>1", false),
        ];
        for (input, want) in cases {
            let sel = parse_label_selector(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.matches(&l), want, "selector {input:?}");
        }
        let obj = json!({"metadata": {"labels": {"app": "web"}}});
        let sel = parse_label_selector("app=web").map_err(|e| e.to_string());
        assert_eq!(sel.map(|s| s.matches_object(&obj)), Ok(true));
        let bare = json!({"metadata": {}});
        let sel = parse_label_selector("!app").map_err(|e| e.to_string());
        assert_eq!(sel.map(|s| s.matches_object(&bare)), Ok(true));
    }

    #[test]
    fn converts_metav1_label_selectors() {
        let null = from_label_selector_json(&Value::Null).map_err(|e| e.to_string());
        assert_eq!(null.as_ref().map(LabelSelector::matches_nothing), Ok(true));
        assert_eq!(null.map(|s| s.matches(&labels(&[]))), Ok(false));

        let empty = from_label_selector_json(&json!({})).map_err(|e| e.to_string());
        assert_eq!(
            empty.map(|s| (s.is_empty(), s.matches(&labels(&[("a", "b")])))),
            Ok((true, true))
        );

        let sel = from_label_selector_json(&json!({
            "matchLabels": {"tier": "front", "app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        }))
        .map_err(|e| e.to_string());
        assert_eq!(
            sel.as_ref().map(ToString::to_string),
            Ok("app=web,!canary,env in (dev,prod),tier=front".to_string())
        );
        let l = labels(&[("app", "web"), ("tier", "front"), ("env", "dev")]);
        assert_eq!(sel.as_ref().map(|s| s.matches(&l)), Ok(true));
        assert_eq!(
            sel.as_ref().map(|s| s.requires_exact_match("app")),
            Ok(Some("web"))
        );

        let bad = from_label_selector_json(
            &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        );
        assert_eq!(
            bad.map_err(|e| e.to_string()),
            Err("\"Gt\" is not a valid label selector operator".to_string())
        );

        let bad = from_label_selector_json(
            &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
        );
        assert_eq!(
            bad.map_err(|e| e.to_string()),
            Err(
                "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                    .to_string()
            )
        );
        let bad = from_label_selector_json(
            &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        );
        assert_eq!(
            bad.map_err(|e| e.to_string()),
            Err("values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist".to_string())
        );
        assert_eq!(format_label_selector(&Value::Null), "<none>");
        assert_eq!(
            format_label_selector(&json!({"matchLabels": {"app": "web"}})),
            "app=web"
        );
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn parses_field_selectors() {
        let sel =
            parse_field_selector("spec.nodeName=n1,metadata.name!=x").map_err(|e| e.to_string());
        assert_eq!(
            sel.as_ref().map(ToString::to_string),
            Ok("metadata.name!=x,spec.nodeName=n1".to_string())
        );
        assert_eq!(sel.as_ref().map(|s| s.pinned_node_name()), Ok(Some("n1")));
        assert_eq!(sel.as_ref().map(|s| s.pinned_name()), Ok(None));

        let sel = parse_field_selector("metadata.name==a\\,b\\=c\\\\").map_err(|e| e.to_string());
        assert_eq!(sel.as_ref().map(|s| s.pinned_name()), Ok(Some("a,b=c\\")));
        assert_eq!(
            sel.map(|s| s.to_string()),
            Ok("metadata.name=a\\,b\\=c\\\\".to_string())
        );

        assert_eq!(parse_field_selector("").map(|s| s.is_empty()), Ok(true));
        let cases = [
            ("foo", "invalid selector: 'foo'; can't understand 'foo'"),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: 61",
            ),
            (
                "a=b\\x",
                "invalid field selector: invalid escape sequence: \\x",
            ),
            (
                "a=b\\",
                "invalid field selector: invalid escape sequence: \\",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_field_selector(input).map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{input}"
            );
        }
    }

    #[test]
    fn field_values_follow_each_kind() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "serviceAccount": "legacy"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}
        });
        let cases = [
            ("metadata.name", Some("web-1")),
            ("metadata.namespace", Some("default")),
            ("spec.nodeName", Some("n1")),
            ("spec.host", Some("n1")),
            ("spec.hostNetwork", Some("false")),
            ("spec.serviceAccountName", Some("legacy")),
            ("status.phase", Some("Running")),
            ("status.podIP", Some("10.0.0.5")),
            ("status.podIPs", None),
        ];
        for (field, want) in cases {
            assert_eq!(
                field_value("", "Pod", &pod, field),
                Ok(want.map(str::to_string)),
                "field {field}"
            );
        }
        assert_eq!(
            field_value("", "Pod", &pod, "spec.containers").map_err(|e| e.to_string()),
            Err("field label not supported: spec.containers".to_string())
        );
        assert_eq!(
            field_value("apps", "Deployment", &pod, "spec.replicas").map_err(|e| e.to_string()),
            Err("\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                .to_string())
        );
        assert_eq!(
            field_value(
                "",
                "Node",
                &json!({"metadata": {"name": "n"}}),
                "metadata.namespace"
            )
            .map_err(|e| e.to_string()),
            Err("field label not supported: metadata.namespace".to_string())
        );
        let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert_eq!(
            field_value("", "Node", &node, "spec.unschedulable"),
            Ok(Some("true".to_string()))
        );
        let rs = json!({"metadata": {"name": "r"}, "status": {"replicas": 3}});
        assert_eq!(
            field_value("apps", "ReplicaSet", &rs, "status.replicas"),
            Ok(Some("3".to_string()))
        );
        let job = json!({"metadata": {"name": "j"}, "status": {}});
        assert_eq!(
            field_value("batch", "Job", &job, "status.successful"),
            Ok(Some("0".to_string()))
        );
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        assert_eq!(
            field_value("", "Secret", &secret, "type"),
            Ok(Some("Opaque".to_string()))
        );
    }

    #[test]
    fn matches_events_the_way_kubectl_describe_asks() {
        let event = json!({
            "metadata": {"name": "web.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u-1"},
            "reason": "Pulled", "type": "Normal",
            "reportingComponent": "kubelet", "source": {}
        });
        let sel = parse_field_selector(
            "involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=Pod,involvedObject.uid=u-1",
        )
        .map_err(|e| e.to_string());
        assert_eq!(
            sel.as_ref().map(|s| s.matches("", "Event", &event)),
            Ok(Ok(true))
        );
        let other = parse_field_selector("involvedObject.uid=u-2").map_err(|e| e.to_string());
        assert_eq!(other.map(|s| s.matches("", "Event", &event)), Ok(Ok(false)));
        // source falls back to the reporting component when source.component is empty.
        assert_eq!(
            field_value("", "Event", &event, "source"),
            Ok(Some("kubelet".to_string()))
        );

        let ev1 = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Node", "name": "n1"},
                         "reportingController": "kubelet"});
        assert_eq!(
            field_value("events.k8s.io", "Event", &ev1, "regarding.name"),
            Ok(Some("n1".to_string()))
        );
        assert_eq!(
            field_value("events.k8s.io", "Event", &ev1, "source"),
            Err(SelectorError::FieldLabelNotSupported("source".to_string()))
        );
        let unsupported = parse_field_selector("spec.foo=x").map_err(|e| e.to_string());
        assert_eq!(
            unsupported.map(|s| s.validate("", "Event").map_err(|e| e.to_string())),
            Ok(Err("field label not supported: spec.foo".to_string()))
        );
    }

    #[test]
    fn missing_supported_fields_compare_as_empty() {
        let sts = json!({"metadata": {"name": "db"}});
        let eq = parse_field_selector("status.successful=").map_err(|e| e.to_string());
        assert_eq!(
            eq.map(|s| s.matches("apps", "StatefulSet", &sts)),
            Ok(Ok(true))
        );
        let ns = parse_field_selector("metadata.namespace=default").map_err(|e| e.to_string());
        let cluster_scoped = json!({"metadata": {"name": "c"}});
        assert_eq!(
            ns.map(|s| s.matches("rbac.authorization.k8s.io", "ClusterRole", &cluster_scoped)),
            Ok(Ok(false))
        );
    }
}
