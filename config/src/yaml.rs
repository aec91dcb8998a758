//! A YAML document as a tree of nodes that remember where they start, so that
//! every later error can name `line:col`.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::Diagnostic;

/// Where a node starts in the source: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One YAML node: a scalar (kept as text; typed when read), a sequence or a mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text of the scalar and whether it was quoted (quoted text is never null).
    Scalar(String, bool),
    Seq(Vec<Node>),
    /// Entries in document order; keys are nodes so their positions survive.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// True for `~`, `null`, or an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s, false) if s.is_empty() || s == "~" || s == "null")
    }

    /// A short name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(..) if self.is_null() => "null",
            Value::Scalar(..) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar node.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }
}

/// An open sequence or mapping while its events arrive.
struct Frame {
    node: Node,
    /// A mapping's key waiting for its value.
    pending_key: Option<Node>,
    anchor: usize,
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    error: Option<Diagnostic>,
}

impl TreeBuilder {
    fn push_value(&mut self, node: Node) {
        let Some(frame) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut frame.node.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match frame.pending_key.take() {
                None => frame.pending_key = Some(node),
                Some(key) => entries.push((key, node)),
            },
            Value::Scalar(..) => {}
        }
    }

    fn open(&mut self, value: Value, anchor: usize, pos: Pos) {
        self.stack.push(Frame {
            node: Node { value, pos },
            pending_key: None,
            anchor,
        });
    }

    fn remember_anchor(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let node = Node {
                    value: Value::Scalar(text, quoted),
                    pos,
                };
                self.remember_anchor(anchor, &node);
                self.push_value(node);
            }
            Event::SequenceStart(anchor, _) => self.open(Value::Seq(Vec::new()), anchor, pos),
            Event::MappingStart(anchor, _) => self.open(Value::Map(Vec::new()), anchor, pos),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    self.remember_anchor(frame.anchor, &frame.node);
                    self.push_value(frame.node);
                }
            }
            Event::Alias(id) => match self.anchors.iter().rev().find(|(a, _)| *a == id) {
                Some((_, node)) => {
                    let mut node = node.clone();
                    node.pos = pos;
                    self.push_value(node);
                }
                None => {
                    self.error
                        .get_or_insert(Diagnostic::new(pos, "alias to an unknown anchor"));
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Parses one YAML document into a node tree. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, Diagnostic> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let pos = Pos::from(*e.marker());
        return Err(Diagnostic::new(
            pos,
            format!("YAML syntax error: {}", e.info()),
        ));
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Map(Vec::new()),
        pos: Pos { line: 1, col: 1 },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let doc = parse("a: 1\nb:\n  c: [x, y]\n").expect("valid yaml");
        let Value::Map(entries) = &doc.value else {
            panic!("root is a map")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Map(inner) = &entries[1].1.value else {
            panic!("b is a map")
        };
        assert_eq!(inner[0].0.pos, Pos { line: 3, col: 3 });
        assert_eq!(inner[0].1.pos.line, 3);
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed flow sequence");
        assert!(err.pos.line >= 1);
        assert!(err.message.starts_with("YAML syntax error"));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let doc = parse("a: &x {k: 1}\nb: *x\n").expect("valid yaml");
        let Value::Map(entries) = &doc.value else {
            panic!("root is a map")
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
    }
}
