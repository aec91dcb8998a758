//! Switchyard's configuration: the YAML file, its typed model (the Region
//! Artifact, routing, consistency, op log), and validation that reports every
//! problem as `FILE:LINE:COL: message`.

mod consistency;
pub mod diag;
pub mod model;
mod overload;
mod parse;
mod traffic;
mod transport;
mod validate;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use diag::{parse_duration, Diagnostic};
pub use model::*;
pub use parse::parse_endpoint;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read config: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", Invalid(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl LoadError {
    /// The diagnostics of an invalid file (empty for read errors).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid { diagnostics, .. } => diagnostics,
            LoadError::Io { .. } => &[],
        }
    }
}

struct Invalid<'a>(&'a Path, &'a [Diagnostic]);

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{d}", self.0.display())?;
        }
        Ok(())
    }
}

/// Reads and validates the config file at `path`; relative paths inside it are
/// resolved against its folder.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, path)
}

/// Validates config `text` as if read from `path`.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, LoadError> {
    let invalid = |diagnostics| LoadError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let root = yaml::parse(text).map_err(|d| invalid(vec![d]))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut d = diag::Diags::default();
    let cfg = parse::config(&root, path, base, &mut d);
    match cfg {
        Some(cfg) if d.list.is_empty() => Ok(cfg),
        _ => {
            let mut list = d.list;
            list.sort_by_key(|x| (x.pos.line, x.pos.col));
            list.dedup();
            Err(invalid(list))
        }
    }
}

/// The example config of the design document; the demo and tests start from it.
pub const EXAMPLE: &str = include_str!("../examples/switchyard.yaml");

#[cfg(test)]
mod tests;
