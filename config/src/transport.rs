//! The transport keys: how regions are reached (`regions.X.tls`,
//! `regions.X.protocol`), the access log and span export.

use std::path::{Path, PathBuf};

use crate::diag::{self, found, Diags, Fields};
use crate::model::{AccessLog, AccessLogTarget, Protocol, Tracing, UpstreamTls};
use crate::yaml::Node;

/// A file the config names: resolved against the config's folder, and
/// reported here (with its position) when it cannot be read, rather than
/// later by whoever opens it.
fn readable_file(n: &Node, path: &str, base: &Path, d: &mut Diags) -> Option<PathBuf> {
    let name = diag::string(n, path, d)?;
    let file = base.join(&name);
    match std::fs::metadata(&file) {
        Ok(m) if m.is_file() => Some(file),
        Ok(_) => {
            d.error(n.pos, format!("`{path}`: {} is not a file", file.display()));
            None
        }
        Err(e) => {
            d.error(
                n.pos,
                format!("`{path}`: cannot read {}: {e}", file.display()),
            );
            None
        }
    }
}

/// `regions.X.tls: { sni, ca, verify, client_cert, client_key }`.
pub(crate) fn upstream_tls(
    n: &Node,
    path: &str,
    base: &Path,
    d: &mut Diags,
) -> Option<UpstreamTls> {
    let f = Fields::new(
        n,
        path,
        &["sni", "ca", "verify", "client_cert", "client_key"],
        d,
    )?;
    let sni = f.get("sni").and_then(|n| {
        let s = diag::string(n, &f.child("sni"), d)?;
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !ok {
            d.error(
                n.pos,
                format!(
                    "`{}` must be a DNS name, found {}",
                    f.child("sni"),
                    found(n)
                ),
            );
        }
        ok.then_some(s)
    });
    let ca = f
        .get("ca")
        .and_then(|n| readable_file(n, &f.child("ca"), base, d));
    let verify = f
        .get("verify")
        .and_then(|n| diag::boolean(n, &f.child("verify"), d))
        .unwrap_or(true);
    let cert = f
        .get("client_cert")
        .and_then(|n| readable_file(n, &f.child("client_cert"), base, d));
    let key = f
        .get("client_key")
        .and_then(|n| readable_file(n, &f.child("client_key"), base, d));
    let client_cert = match (f.get("client_cert"), f.get("client_key")) {
        (Some(_), None) | (None, Some(_)) => {
            d.error(
                n.pos,
                format!("`{path}` needs both `client_cert` and `client_key` for a client certificate, or neither"),
            );
            None
        }
        _ => cert.zip(key),
    };
    Some(UpstreamTls {
        sni,
        ca,
        verify,
        client_cert,
    })
}

/// `regions.X.protocol: h1 | h2 | auto`.
pub(crate) fn protocol(n: &Node, path: &str, d: &mut Diags) -> Option<Protocol> {
    diag::one_of(
        n,
        path,
        &[
            ("h1", Protocol::H1),
            ("h2", Protocol::H2),
            ("auto", Protocol::Auto),
        ],
        d,
    )
}

/// `access_log: { path: FILE | stdout, format: json, include_query, buffer }`.
pub(crate) fn access_log(n: &Node, base: &Path, d: &mut Diags) -> Option<AccessLog> {
    let f = Fields::new(
        n,
        "access_log",
        &["path", "stdout", "format", "include_query", "buffer"],
        d,
    )?;
    let stdout = f
        .get("stdout")
        .and_then(|n| diag::boolean(n, "access_log.stdout", d))
        .unwrap_or(false);
    let file = f
        .get("path")
        .and_then(|n| diag::string(n, "access_log.path", d));
    let target = match (file, stdout) {
        (Some(p), false) if p == "stdout" || p == "-" => AccessLogTarget::Stdout,
        (Some(p), false) => {
            let file = base.join(p);
            let folder = file.parent().unwrap_or(Path::new("."));
            if !folder.is_dir() {
                if let Some(n) = f.get("path") {
                    d.error(
                        n.pos,
                        format!(
                            "`access_log.path`: folder {} does not exist",
                            folder.display()
                        ),
                    );
                }
            }
            AccessLogTarget::File(file)
        }
        (None, true) => AccessLogTarget::Stdout,
        (Some(_), true) => {
            d.error(
                n.pos,
                "`access_log` takes `path` or `stdout: true`, not both",
            );
            AccessLogTarget::Stdout
        }
        (None, false) => {
            d.error(
                n.pos,
                "`access_log` needs `path: FILE` (or `path: stdout`, or `stdout: true`)",
            );
            return None;
        }
    };
    if let Some(n) = f.get("format") {
        diag::one_of(n, "access_log.format", &[("json", ())], d);
    }
    let include_query = f
        .get("include_query")
        .and_then(|n| diag::boolean(n, "access_log.include_query", d))
        .unwrap_or(false);
    let buffer = f
        .get("buffer")
        .and_then(|n| diag::integer(n, "access_log.buffer", 16, 10_000_000, d))
        .map_or(16_384, |v| v as usize);
    Some(AccessLog {
        target,
        include_query,
        buffer,
    })
}

/// `tracing: { otlp: URL, sample: 0..1, service_name }`.
pub(crate) fn tracing(n: &Node, d: &mut Diags) -> Option<Tracing> {
    let f = Fields::new(n, "tracing", &["otlp", "sample", "service_name"], d)?;
    let otlp = f.require("otlp", d).and_then(|n| {
        let url = diag::string(n, "tracing.otlp", d)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            d.error(
                n.pos,
                format!("`tracing.otlp` must be an http:// or https:// URL of an OTLP/HTTP traces endpoint, found {}", found(n)),
            );
            return None;
        }
        Some(url)
    });
    let sample = f
        .get("sample")
        .and_then(|n| diag::number(n, "tracing.sample", 0.0, 1.0, d))
        .unwrap_or(1.0);
    let service_name = f
        .get("service_name")
        .and_then(|n| diag::string(n, "tracing.service_name", d))
        .unwrap_or_else(|| "switchyard".to_string());
    Some(Tracing {
        otlp: otlp?,
        sample,
        service_name,
    })
}
