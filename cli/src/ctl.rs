//! `switchyard ctl`: a client of the admin API. The token comes from the
//! environment variable the config names (`SWITCHYARD_ADMIN_TOKEN` by default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args)]
pub struct CtlArgs {
    /// The admin address; defaults to the config's `admin.addr`, else 127.0.0.1:9901.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// A config file to read `admin.addr` and `admin.token_env` from.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Regions (health, lag, dial, ejection, rate), owners and ramps, as a table.
    Status {
        /// Print the raw JSON document instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-read and validate the config, then swap it in.
    Reload,
    /// Set a region's traffic dial (0-100, steps of 0.1).
    Dial { region: String, percent: f64 },
    /// Stop new requests to a region; in-flight ones finish.
    Drain {
        region: String,
        /// Take the region back into rotation.
        #[arg(long)]
        undo: bool,
    },
    /// Start, pause or abort a ramp.
    Ramp {
        name: String,
        #[arg(value_parser = ["start", "pause", "abort"])]
        action: String,
    },
    /// Move a partition's ownership (or every partition's, with `*`) to a region.
    Promote {
        #[arg(long)]
        partition: String,
        /// The region to promote; a dry run without it compares every candidate.
        #[arg(long, required_unless_present = "dry_run")]
        to: Option<String>,
        /// Promote past the health, drain, lag and writes-at-risk rules (logged).
        #[arg(long)]
        force: bool,
        /// Change nothing: show the acknowledged writes the promotion would
        /// strand, and whether the rules allow it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show where a request would go, and why.
    Explain {
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        path: String,
        /// A request header, `Name: value`; repeatable.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The client address.
        #[arg(long)]
        client: Option<String>,
    },
}

pub fn run(args: CtlArgs) -> ExitCode {
    match execute(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard ctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A request to the admin API.
struct Call {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

fn call(method: reqwest::Method, path: impl Into<String>, body: Option<Value>) -> Call {
    Call {
        method,
        path: path.into(),
        body,
    }
}

fn execute(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let cfg = args
        .config
        .as_deref()
        .map(switchyard_config::load)
        .transpose()?;
    let admin = cfg.as_ref().and_then(|c| c.admin.clone());
    let addr = args
        .admin
        .or(admin.as_ref().map(|a| a.addr))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
    let token_env = admin.map_or_else(|| "SWITCHYARD_ADMIN_TOKEN".to_string(), |a| a.token_env);
    let token = std::env::var(&token_env).unwrap_or_default();
    use reqwest::Method;
    let mut table = false;
    let c = match &args.command {
        CtlCommand::Status { json } => {
            table = !json;
            call(Method::GET, "/admin/v1/status", None)
        }
        CtlCommand::Reload => call(Method::POST, "/admin/v1/reload", None),
        CtlCommand::Dial { region, percent } => call(
            Method::PUT,
            format!("/admin/v1/regions/{region}/dial"),
            Some(json!({ "percent": percent })),
        ),
        CtlCommand::Drain { region, undo } => call(
            Method::POST,
            format!(
                "/admin/v1/regions/{region}/{}",
                if *undo { "undrain" } else { "drain" }
            ),
            None,
        ),
        CtlCommand::Ramp { name, action } => call(
            Method::POST,
            format!("/admin/v1/ramps/{name}/{action}"),
            None,
        ),
        CtlCommand::Promote {
            partition,
            to,
            force,
            dry_run,
        } => call(
            Method::POST,
            "/admin/v1/promote",
            Some(json!({"partition": partition, "to": to, "force": force, "dry_run": dry_run})),
        ),
        CtlCommand::Explain {
            method,
            path,
            headers,
            client,
        } => {
            let mut h = serde_json::Map::new();
            for line in headers {
                let (k, v) = line
                    .split_once(':')
                    .with_context(|| format!("--header {line:?} must be `Name: value`"))?;
                h.insert(k.trim().to_string(), json!(v.trim()));
            }
            call(
                Method::POST,
                "/admin/v1/explain",
                Some(json!({"method": method, "path": path, "headers": h, "client": client})),
            )
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("http://{addr}{}", c.path);
    let result = rt.block_on(async {
        let mut req = reqwest::Client::new()
            .request(c.method, &url)
            .bearer_auth(&token)
            .timeout(std::time::Duration::from_secs(10));
        if let Some(b) = &c.body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    let (status, body) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "switchyard ctl: cannot reach the admin API at {addr}: {}",
                root_cause(&e)
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let parsed = serde_json::from_str::<Value>(&body).ok();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        eprintln!(
            "switchyard ctl: the router refused the admin token (401); set {token_env} to the router's token"
        );
        return Ok(ExitCode::FAILURE);
    }
    if !status.is_success() {
        let why = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map_or_else(|| body.trim().to_string(), str::to_string);
        let rule = parsed
            .as_ref()
            .and_then(|v| v.get("rule"))
            .and_then(Value::as_str)
            .map(|r| format!(" [rule {r}]"))
            .unwrap_or_default();
        eprintln!("switchyard ctl: refused ({status}){rule}: {why}");
        return Ok(ExitCode::FAILURE);
    }
    match parsed {
        Some(v) if table => print!("{}", status_table(&v)),
        Some(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        None => print!("{body}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The innermost error's text: "Connection refused" rather than a chain.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The status document as a table an operator reads at a glance.
pub fn status_table(v: &Value) -> String {
    let mut out = String::new();
    let head = [
        "REGION", "TYPE", "HEALTHY", "LAG", "DIAL", "EJECTED", "DRAINING", "RATE", "INFLIGHT",
        "DRIFT",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    if let Some(regions) = v["regions"].as_object() {
        for (name, r) in regions {
            let rate = match &r["rate"] {
                Value::Null => "-".into(),
                rate => format!(
                    "{}/s ({} of {} tokens)",
                    text(&rate["rps"]),
                    text(&rate["tokens"]),
                    text(&rate["burst"])
                ),
            };
            let ejected = match &r["ejection"] {
                Value::Null => text(&r["ejected"]),
                e => format!("yes ({}, {}s left)", text(&e["reason"]), text(&e["left_s"])),
            };
            let drift = r["drift_reasons"]
                .as_array()
                .filter(|d| !d.is_empty())
                .map_or_else(
                    || "-".to_string(),
                    |d| d.iter().map(text).collect::<Vec<_>>().join("; "),
                );
            rows.push(vec![
                name.clone(),
                text(&r["type"]),
                text(&r["healthy"]),
                format!("{}ms", text(&r["lag_ms"])),
                format!("{}%", text(&r["dial"])),
                ejected,
                text(&r["draining"]),
                rate,
                text(&r["inflight"]),
                drift,
            ]);
        }
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str("\nOWNERS\n");
    if let Some(owners) = v["owners"].as_object() {
        for (p, o) in owners {
            out.push_str(&format!(
                "  {p:<16} {} (epoch {})\n",
                text(&o["region"]),
                text(&o["epoch"])
            ));
        }
    }
    out.push_str("\nRAMPS\n");
    match v["ramps"].as_object() {
        Some(ramps) if !ramps.is_empty() => {
            for (name, r) in ramps {
                out.push_str(&format!(
                    "  {name:<16} region {}  state {}  step {} of [{}]  dial {}%{}\n",
                    text(&r["region"]),
                    text(&r["state"]),
                    text(&r["step"]),
                    r["steps"]
                        .as_array()
                        .map(|s| s.iter().map(text).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                    text(&r["dial"]),
                    match &r["reason"] {
                        Value::Null => String::new(),
                        reason => format!("\n  {:<16} {}", "", text(reason)),
                    }
                ));
            }
        }
        _ => out.push_str("  (none)\n"),
    }
    out
}
