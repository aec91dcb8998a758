//! `switchyard ctl`: a client of the admin API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

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
    /// Regions (health, lag, dial, drift), owners and ramps.
    Status,
    /// Re-read and validate the config, then swap it in.
    Reload,
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
    let (method, path) = match args.command {
        CtlCommand::Status => (reqwest::Method::GET, "/admin/v1/status"),
        CtlCommand::Reload => (reqwest::Method::POST, "/admin/v1/reload"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = rt.block_on(async {
        let resp = reqwest::Client::new()
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(&token)
            .send()
            .await?;
        let status = resp.status();
        anyhow::Ok((status, resp.text().await?))
    })?;
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => print!("{body}"),
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("switchyard ctl: the router answered {status}");
        ExitCode::FAILURE
    })
}
