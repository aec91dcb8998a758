//! A bare pingora proxy: every request to one fixed upstream, no routing
//! logic. The load drills run it beside Switchyard to show what our routing
//! costs on top of pingora itself.
//!
//! Usage: bare-proxy LISTEN UPSTREAM [THREADS]

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;
use std::time::Duration;

// The same server tuning as `switchyard` (allocator, runtime), so that the
// difference between the two is what the routing costs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bare-proxy LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    }
    let Ok(upstream) = args[2].parse::<SocketAddr>() else {
        eprintln!("bare-proxy: UPSTREAM must be ip:port, found {:?}", args[2]);
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
    service.add_tcp(&args[1]);
    server.add_service(service);
    server.run_forever();
}
