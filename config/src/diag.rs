//! Diagnostics and the typed readers that produce them: each reader checks one
//! node against what the key expects and records a `line:col` error naming the
//! key path, what is allowed and what was found.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::yaml::{Node, Pos, Value};

/// One problem in a config file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
}

impl Diagnostic {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.message)
    }
}

/// Collects every diagnostic of one validation run.
#[derive(Debug, Default)]
pub struct Diags {
    pub list: Vec<Diagnostic>,
}

impl Diags {
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.list.push(Diagnostic::new(pos, message));
    }
}

/// Joins a key path with a child key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Shows a found scalar in messages: quoted text, or the node's kind.
pub fn found(node: &Node) -> String {
    match &node.value {
        Value::Scalar(s, _) if !node.is_null() => format!("{s:?}"),
        _ => node.kind().to_string(),
    }
}

/// The fields of one mapping, checked against the keys it allows.
pub struct Fields<'n> {
    pub path: String,
    pub pos: Pos,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// Reads `node` as a mapping with the `allowed` keys. Unknown or repeated keys
    /// and a node that is not a mapping are reported; `None` only in the last case.
    pub fn new(node: &'n Node, path: &str, allowed: &[&str], d: &mut Diags) -> Option<Self> {
        let entries = map_entries(node, path, d)?;
        let mut kept: Vec<(&str, &Node, &Node)> = Vec::new();
        for (key, key_node, value) in entries {
            if !allowed.contains(&key) {
                d.error(
                    key_node.pos,
                    format!(
                        "unknown key `{}`; expected one of: {}",
                        join(path, key),
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            kept.push((key, key_node, value));
        }
        // A block mapping starts where its first key does; the root at 1:1.
        let pos = if path.is_empty() {
            Pos { line: 1, col: 1 }
        } else {
            kept.first()
                .map(|(_, k, _)| k.pos)
                .filter(|p| (p.line, p.col) < (node.pos.line, node.pos.col))
                .unwrap_or(node.pos)
        };
        Some(Fields {
            path: path.to_string(),
            pos,
            entries: kept,
        })
    }

    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, v)| *k == key && !v.is_null())
            .map(|(_, _, v)| *v)
    }

    /// A required key: reports its absence at the mapping's position.
    pub fn require(&self, key: &str, d: &mut Diags) -> Option<&'n Node> {
        let v = self.get(key);
        if v.is_none() {
            d.error(
                self.pos,
                format!("missing required key `{}`", join(&self.path, key)),
            );
        }
        v
    }

    pub fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// A mapping's entries with string keys; repeated keys are reported and skipped.
pub fn map_entries<'n>(
    node: &'n Node,
    path: &str,
    d: &mut Diags,
) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
    let Value::Map(entries) = &node.value else {
        if node.is_null() {
            return Some(Vec::new());
        }
        d.error(
            node.pos,
            format!("`{path}` must be a mapping, found {}", node.kind()),
        );
        return None;
    };
    let mut out: Vec<(&str, &Node, &Node)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Some(key) = k.as_scalar() else {
            d.error(k.pos, format!("keys of `{path}` must be text"));
            continue;
        };
        if out.iter().any(|(seen, _, _)| *seen == key) {
            d.error(k.pos, format!("duplicate key `{}`", join(path, key)));
            continue;
        }
        out.push((key, k, v));
    }
    Some(out)
}

/// A list node's items (a single scalar is not a list).
pub fn seq<'n>(node: &'n Node, path: &str, d: &mut Diags) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            d.error(
                node.pos,
                format!("`{path}` must be a list, found {}", node.kind()),
            );
            None
        }
    }
}

pub fn string(node: &Node, path: &str, d: &mut Diags) -> Option<String> {
    match &node.value {
        Value::Scalar(s, _) if !node.is_null() => Some(s.clone()),
        _ => {
            d.error(
                node.pos,
                format!("`{path}` must be text, found {}", node.kind()),
            );
            None
        }
    }
}

/// One of a fixed set of words.
pub fn one_of<T: Copy>(node: &Node, path: &str, choices: &[(&str, T)], d: &mut Diags) -> Option<T> {
    let s = string(node, path, d)?;
    if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
        return Some(*v);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    d.error(
        node.pos,
        format!(
            "`{path}` must be one of {}, found {}",
            names.join(" | "),
            found(node)
        ),
    );
    None
}

/// An integer within `min..=max`.
pub fn integer(node: &Node, path: &str, min: u64, max: u64, d: &mut Diags) -> Option<u64> {
    let s = string(node, path, d)?;
    match s.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            d.error(
                node.pos,
                format!(
                    "`{path}` must be a whole number from {min} to {max}, found {}",
                    found(node)
                ),
            );
            None
        }
    }
}

/// A decimal number within `min..=max`.
pub fn number(node: &Node, path: &str, min: f64, max: f64, d: &mut Diags) -> Option<f64> {
    let s = string(node, path, d)?;
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= min && v <= max => Some(v),
        _ => {
            d.error(
                node.pos,
                format!(
                    "`{path}` must be a number from {min} to {max}, found {}",
                    found(node)
                ),
            );
            None
        }
    }
}

/// A duration such as `500ms`, `2s`, `1m`.
pub fn duration(node: &Node, path: &str, d: &mut Diags) -> Option<Duration> {
    let s = string(node, path, d)?;
    match parse_duration(&s) {
        Some(v) => Some(v),
        None => {
            d.error(
                node.pos,
                format!(
                    "`{path}` must be a duration such as 500ms, 2s or 1m, found {}",
                    found(node)
                ),
            );
            None
        }
    }
}

/// Parses `500ms`, `2s`, `1m`, `1h`, `1m30s`; a bare number is not a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    humantime::parse_duration(s).ok()
}

pub fn socket_addr(node: &Node, path: &str, d: &mut Diags) -> Option<SocketAddr> {
    let s = string(node, path, d)?;
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error(
                node.pos,
                format!(
                    "`{path}` must be an IP address and port such as 127.0.0.1:8080, found {}",
                    found(node)
                ),
            );
            None
        }
    }
}

pub fn boolean(node: &Node, path: &str, d: &mut Diags) -> Option<bool> {
    one_of(node, path, &[("true", true), ("false", false)], d)
}

/// A list of text items.
pub fn strings(node: &Node, path: &str, d: &mut Diags) -> Vec<(String, Pos)> {
    let Some(items) = seq(node, path, d) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, n)| string(n, &format!("{path}[{i}]"), d).map(|s| (s, n.pos)))
        .collect()
}
