//! A bare pingora proxy: every request to one fixed upstream, no routing
//! logic. The load drills run it beside Switchyard to show what our routing
//! costs on top of pingora itself.
//!
//! Usage: bare-proxy LISTEN UPSTREAM [THREADS [TLS_LISTEN CERT KEY]]
//!
//! With `TLS_LISTEN`, it also takes TLS there (HTTP/2 by ALPN), with pingora's
//! defaults otherwise.

use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;
use std::time::Duration;

// The same server tuning as `switchyard` (allocator, runtime), so that the
// difference between the two is what the routing costs.
#[global_allocator]
static GLOBAL: switchyard_alloc::Allocator = switchyard_alloc::Allocator;

struct Bare {
    upstream: SocketAddr,
}

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
        eprintln!("usage: bare-proxy LISTEN UPSTREAM [THREADS [TLS_LISTEN CERT KEY]]");
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
    if let [tls_listen, cert, key] = args.get(4..7).unwrap_or_default() {
        let mut tls = match pingora::listeners::tls::TlsSettings::intermediate(cert, key) {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("bare-proxy: cannot load {cert} or {key}: {e}");
                std::process::exit(2);
            }
        };
        tls.enable_h2();
        service.add_tls_with_settings(tls_listen, None, tls);
    }
    server.add_service(service);
    server.run_forever();
}
