//! A drill's table: each figure with its value and, for the ones that must
//! be zero, whether it is.

use std::fmt::Write;

#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: String,
    /// `Some(n)`: a goal-0 figure, and its count.
    pub must_be_zero: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub drill: String,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new(drill: &str) -> Report {
        Report {
            drill: drill.into(),
            figures: Vec::new(),
        }
    }

    /// A figure reported for what it is.
    pub fn figure(&mut self, name: impl Into<String>, value: impl std::fmt::Display) {
        self.figures.push(Figure {
            name: name.into(),
            value: value.to_string(),
            must_be_zero: None,
        });
    }

    /// A figure whose goal is 0.
    pub fn zero(&mut self, name: impl Into<String>, count: u64) {
        self.figures.push(Figure {
            name: name.into(),
            value: count.to_string(),
            must_be_zero: Some(count),
        });
    }

    /// Every goal-0 figure is 0.
    pub fn passed(&self) -> bool {
        self.figures
            .iter()
            .all(|f| f.must_be_zero.unwrap_or(0) == 0)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
        let _ = writeln!(out, "== {} ==", self.drill);
        for f in &self.figures {
            let goal = match f.must_be_zero {
                Some(0) => "  goal 0: ok",
                Some(_) => "  goal 0: FAILED",
                None => "",
            };
            let _ = writeln!(out, "  {:width$}  {}{goal}", f.name, f.value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonzero_goal_zero_figure_fails_the_drill() {
        let mut r = Report::new("d");
        r.figure("p99", "3 ms");
        r.zero("lost", 0);
        assert!(r.passed());
        r.zero("failed", 2);
        assert!(!r.passed());
        assert!(r.table().contains("goal 0: FAILED"));
    }
}
