//! `switchyard-region`: run one reference region.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use switchyard_region::{spawn_with, RegionOpts, Role, ServerTls};

#[derive(Parser)]
#[command(
    name = "switchyard-region",
    about = "A reference region server for trying Switchyard"
)]
struct Args {
    /// The region's name, reported in health and responses.
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// primary takes writes; replica replicates from --replicate-from.
    #[arg(long, default_value = "primary", value_parser = parse_role)]
    role: Role,
    /// Services this region reports in its health JSON (comma separated).
    #[arg(long, default_value = "api", value_delimiter = ',')]
    services: Vec<String>,
    /// Base URL of the owner to replicate from, e.g. http://127.0.0.1:9001.
    #[arg(long)]
    replicate_from: Option<String>,
    /// Replication lag to hold commits back by, e.g. 500ms.
    #[arg(long, default_value = "0s", value_parser = humantime_duration)]
    lag: Duration,
    /// Delay added to every response, to simulate distance, e.g. 80ms.
    #[arg(long, default_value = "0s", value_parser = humantime_duration)]
    delay: Duration,
    #[arg(long, default_value = "X-Partition")]
    partition_header: String,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates chaining to this CA (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<std::path::PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "primary" => Ok(Role::Primary),
        "replica" => Ok(Role::Replica),
        _ => Err(format!("role must be primary or replica, found {s:?}")),
    }
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let ms = s
        .strip_suffix("ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let secs = s
        .strip_suffix('s')
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    ms.or(secs)
        .ok_or_else(|| format!("expected a duration such as 80ms or 2s, found {s:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let opts = RegionOpts {
        name: a.name,
        role: a.role,
        services: a.services,
        replicate_from: a.replicate_from,
        lag: a.lag,
        delay: a.delay,
        partition_header: a.partition_header,
    };
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: a.client_ca.as_deref().map(read).transpose()?,
        }),
        _ => None,
    };
    let (addr, _region) = spawn_with(a.listen, opts, tls.as_ref()).await?;
    println!("region listening on {addr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
