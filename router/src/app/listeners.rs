//! The router's listeners: the admin API and metrics on the control runtime,
//! and the proxy on pingora in a thread of its own, stopped by our own
//! signal handling rather than pingora's.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::apps::HttpServerEvents;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::ConnectionLimit;
use switchyard_config::Config;
use tokio::runtime::Runtime;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{oneshot, watch};

use crate::admin::AdminState;
use crate::app::handover::Inherited;
use crate::app::Bound;
use crate::control::reload::Reloader;
use crate::control::RouterState;
use crate::proxy::Edge;

/// The admin and metrics listeners, kept so an upgrade can hand them over,
/// and the switch that stops serving them.
pub(super) struct ControlListeners {
    kept: Vec<(&'static str, StdListener)>,
    stop: watch::Sender<bool>,
    inherited: Inherited,
}

impl ControlListeners {
    pub(super) fn new(inherited: Inherited) -> Self {
        ControlListeners {
            kept: Vec::new(),
            stop: watch::channel(false).0,
            inherited,
        }
    }

    /// The listener for `name` at `addr`: the one handed over by the process
    /// this one replaces, or a new one. A copy is kept for the next upgrade.
    fn listen(
        &mut self,
        control: &Runtime,
        name: &'static str,
        addr: SocketAddr,
    ) -> anyhow::Result<tokio::net::TcpListener> {
        let std = match self.inherited.take(name, addr) {
            Some(l) => {
                tracing::info!(%addr, "{name} listener taken over");
                l
            }
            None => StdListener::bind(addr)
                .with_context(|| format!("{name}.addr: cannot bind {addr}"))?,
        };
        std.set_nonblocking(true)?;
        self.kept.push((name, std.try_clone()?));
        let _enter = control.enter();
        Ok(tokio::net::TcpListener::from_std(std)?)
    }

    /// Resolves once the listeners have been handed over.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Sends the listeners to the process taking over, then stops serving
    /// them here (in-flight admin requests finish).
    pub(super) fn hand_over(&self, state_dir: &Path) -> anyhow::Result<()> {
        let fds: Vec<_> = self.kept.iter().map(|(n, l)| (*n, l.as_fd())).collect();
        super::handover::hand_over(state_dir, &fds)?;
        let _ = self.stop.send(true);
        Ok(())
    }
}

/// Serves the admin API when the config has one.
pub(super) fn serve_admin(
    control: &Runtime,
    config: &Config,
    state: &Arc<RouterState>,
    reloader: &Arc<Reloader>,
    listeners: &mut ControlListeners,
    bound: &mut Bound,
) -> anyhow::Result<()> {
    let Some(a) = &config.admin else {
        return Ok(());
    };
    let token = bearer_token("admin.token_env", &a.token_env)?;
    if token.is_none() {
        tracing::warn!(env = %a.token_env, "admin token unset: the admin API refuses every request");
    }
    if !a.addr.ip().is_loopback() {
        tracing::warn!(addr = %a.addr, "the admin API listens beyond loopback over plain HTTP (admin.allow_plaintext)");
    }
    let app = crate::admin::router(AdminState {
        router: state.clone(),
        reloader: reloader.clone(),
        token,
        throttle: Arc::default(),
    });
    let listener = listeners.listen(control, "admin", a.addr)?;
    bound.admin = Some(listener.local_addr()?);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let stopped = listeners.stopped();
    control.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
    });
    Ok(())
}

/// A bearer token from the environment variable `env` (named in the config
/// at `key`): `None` when unset, an error when too short to resist guessing.
fn bearer_token(key: &str, env: &str) -> anyhow::Result<Option<Arc<str>>> {
    let Some(token) = std::env::var(env).ok().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let min = switchyard_config::MIN_TOKEN_BYTES;
    if token.len() < min {
        bail!(
            "{key}: {env} holds a token of {} bytes; a bearer token needs at least {min}",
            token.len()
        );
    }
    Ok(Some(Arc::from(token)))
}

/// Serves `/metrics` when the config has a metrics listener, and runs the
/// exporter's upkeep either way.
pub(super) fn serve_metrics(
    control: &Runtime,
    config: &Config,
    handle: PrometheusHandle,
    listeners: &mut ControlListeners,
    bound: &mut Bound,
) -> anyhow::Result<()> {
    if let Some(m) = &config.metrics {
        let token = match &m.token_env {
            None => None,
            Some(env) => Some(
                bearer_token("metrics.token_env", env)?
                    .with_context(|| format!("metrics.token_env: {env} is unset"))?,
            ),
        };
        let render = handle.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: http::HeaderMap| {
                let h = render.clone();
                let token = token.clone();
                async move {
                    let presented = headers
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    if token.is_some()
                        && !crate::admin::login::bearer_matches(token.as_deref(), presented)
                    {
                        crate::metrics::admin_login_failed();
                        return (
                            http::StatusCode::UNAUTHORIZED,
                            [(http::header::WWW_AUTHENTICATE, "Bearer")],
                            "missing or wrong bearer token\n".to_string(),
                        );
                    }
                    (
                        http::StatusCode::OK,
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        h.render(),
                    )
                }
            }),
        );
        let listener = listeners.listen(control, "metrics", m.addr)?;
        bound.metrics = Some(listener.local_addr()?);
        let stopped = listeners.stopped();
        control.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        });
    }
    control.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
    Ok(())
}

/// Tells pingora to stop accepting (or to hand its listeners over first)
/// when our own signal handling says so.
struct StopWatch(tokio::sync::Mutex<Option<oneshot::Receiver<ShutdownSignal>>>);

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        match self.0.lock().await.take() {
            Some(rx) => rx.await.unwrap_or(ShutdownSignal::GracefulTerminate),
            // A dropped sender means the app is gone: stop as well.
            None => ShutdownSignal::GracefulTerminate,
        }
    }
}

/// The proxy service, configured, with its listening addresses chosen.
pub(super) struct Proxy {
    server: Server,
    /// Turned on at the end of a drain: upgraded connections (WebSocket)
    /// still open are closed with a close frame each way.
    pub(super) close_upgraded: tokio::sync::watch::Sender<bool>,
}

/// A WebSocket close frame, 1001 "going away", as a server sends it.
const WS_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// The same as a client sends it: masked (RFC 6455 §5.3), with `key`.
fn ws_going_away_masked(key: [u8; 4]) -> [u8; 8] {
    [
        0x88,
        0x82,
        key[0],
        key[1],
        key[2],
        key[3],
        0x03 ^ key[0],
        0xE9 ^ key[1],
    ]
}

/// The proxy running in its thread.
pub(super) struct Running {
    stop: oneshot::Sender<ShutdownSignal>,
    phase: tokio::sync::broadcast::Receiver<ExecutionPhase>,
}

impl Running {
    /// Stops accepting connections; requests in flight go on.
    pub(super) fn stop_accepting(self) -> Stopping {
        self.send(ShutdownSignal::GracefulTerminate)
    }

    /// Sends the listening sockets to the process taking over (pingora's
    /// graceful upgrade), accepts beside it for [`UPGRADE_OVERLAP`], then
    /// stops accepting.
    pub(super) fn hand_over(self) -> Stopping {
        self.send(ShutdownSignal::GracefulUpgrade)
    }

    fn send(self, signal: ShutdownSignal) -> Stopping {
        if self.stop.send(signal).is_err() {
            tracing::warn!("the proxy thread had already stopped");
        }
        Stopping { phase: self.phase }
    }
}

/// The proxy on its way out.
pub(super) struct Stopping {
    phase: tokio::sync::broadcast::Receiver<ExecutionPhase>,
}

impl Stopping {
    /// Waits (up to `limit`) until the proxy no longer accepts connections.
    pub(super) async fn closed(mut self, limit: Duration) {
        let wait = async {
            loop {
                match self.phase.recv().await {
                    Ok(ExecutionPhase::ShutdownStarted) | Err(RecvError::Closed) => break,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                }
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!("the proxy did not say it stopped accepting");
        }
    }
}

/// How long a process handing its listeners over accepts beside the new one
/// (which accepts from the moment it has them) before it stops.
pub(super) const UPGRADE_OVERLAP: Duration = Duration::from_millis(500);

/// How long an idle client connection is kept once the router stops
/// accepting: a request the client is sending right then is served (with
/// `Connection: close`) rather than failed by the close.
pub(super) const IDLE_LINGER: Duration = Duration::from_secs(1);

impl Proxy {
    /// With `upgrade`, the listening sockets come from the process this one
    /// replaces ([`Server::bootstrap`] waits for them).
    pub(super) fn build(
        config: &Config,
        state: &Arc<RouterState>,
        bound: &mut Bound,
        upgrade: bool,
    ) -> anyhow::Result<Proxy> {
        let mut conf = ServerConf {
            threads: worker_threads(),
            // One current-thread runtime per worker: no cross-thread wakeups on
            // the hot path (the work-stealing runtime spent ~8% in them).
            work_stealing: false,
            grace_period_seconds: Some(config.shutdown_grace.as_secs() + 5),
            graceful_shutdown_timeout_seconds: Some(1),
            upgrade_sock: super::handover::upgrade_sock(&config.state_dir)
                .to_string_lossy()
                .into_owned(),
            upgrade_close_timeout_millis: Some(UPGRADE_OVERLAP.as_millis() as u64),
            ..ServerConf::default()
        };
        conf.upstream_keepalive_pool_size = 1024;
        // The router logs no socket's waiting time: measured, it costs two
        // clock readings per wait, and a proxied request waits at least
        // twice (for the request, for the region's answer).
        pingora::protocols::l4::stream::set_pending_time_measured(false);
        // Registered once per process: a reload that names a new partition
        // header has it parsed per message, as any other name.
        pingora::http::set_known_header_names(expected_header_names(config));
        let opt = Opt {
            upgrade,
            ..Opt::default()
        };
        let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
        let mut service = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            Edge::new(state.clone()),
            "switchyard",
        );
        let (close_upgraded, close_signal) = tokio::sync::watch::channel(false);
        let limits = &config.limits;
        if let Some(proxy) = service.app_logic_mut() {
            let mut options = pingora::apps::HttpServerOptions::default();
            // Pingora counts reuses: N requests are the first and N - 1 reuses.
            options.keepalive_request_limit = Some(limits.max_requests_per_connection - 1);
            options.header_read_timeout = Some(limits.header_timeout);
            // The request line and every field, as `hygiene::check_limits` counts them.
            options.max_request_header_bytes = Some(limits.max_header_bytes);
            options.first_request_timeout_secs =
                Some(crate::proxy::whole_seconds(limits.keepalive_timeout));
            options.h2_max_control_frames_per_sec = Some(limits.h2_max_control_frames_per_sec);
            options.shutdown_idle_linger = Some(IDLE_LINGER);
            options.upgraded_close = Some(pingora::apps::UpgradedClose {
                signal: close_signal,
                to_client: bytes::Bytes::from_static(&WS_GOING_AWAY),
                to_upstream: bytes::Bytes::copy_from_slice(&ws_going_away_masked(
                    rand::random::<u32>().to_be_bytes(),
                )),
            });
            // HTTP/2 by prior knowledge beside HTTP/1.1 (TLS listeners negotiate by ALPN).
            options.h2c = config.listen.h2c;
            options.normalize_header_case = !config.listen.preserve_header_case;
            options.events = Some(Arc::new(ClientCutoffs));
            proxy.server_options = Some(options);
            let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
            h2.max_concurrent_streams(limits.h2_max_concurrent_streams);
            proxy.h2_options = Some(h2);
        }
        if let Some(addr) = config.listen.http {
            let addr = concrete(addr, upgrade, "listen.http")?;
            service.add_listener(
                ListenerConfig::tcp(addr.to_string()).l4_buffer(client_socket_buffers()),
            );
            bound.http = Some(addr);
        }
        if let Some(https) = &config.listen.https {
            check_tls_files(&https.cert, &https.key)?;
            let addr = concrete(https.addr, upgrade, "listen.https.addr")?;
            let mut tls = TlsSettings::intermediate(
                &https.cert.to_string_lossy(),
                &https.key.to_string_lossy(),
            )
            .context("listen.https: cannot load the certificate or key")?;
            tls.enable_h2();
            service.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(tls)
                    .l4_buffer(client_socket_buffers()),
            );
            bound.https = Some(addr);
        }
        let connections = Arc::new(ConnectionLimit::new(
            limits
                .max_connections
                .unwrap_or(super::open_files::DEFAULT_MAX_CONNECTIONS),
        ));
        service.set_connection_limit(connections.clone());
        if state.connections.set(connections).is_err() {
            tracing::warn!("the proxy's connection limit was already set");
        }
        server.add_service(service);
        // Pingora binds at run; in an upgrade this takes the old process's
        // sockets (waiting up to 5 s for them).
        server.bootstrap();
        Ok(Proxy {
            server,
            close_upgraded,
        })
    }

    /// Starts serving in a thread of its own.
    pub(super) fn start(self) -> anyhow::Result<Running> {
        let (stop, stop_rx) = oneshot::channel();
        let server = self.server;
        let phase = server.watch_execution_phase();
        std::thread::Builder::new()
            .name("switchyard-proxy".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(StopWatch(tokio::sync::Mutex::new(Some(stop_rx)))),
                })
            })?;
        Ok(Running { stop, phase })
    }
}

/// The buffers between a client socket and pingora. Pingora's default puts
/// a 64 KiB read buffer on every connection from the moment it is accepted:
/// most of the ~100 KiB an idle connection cost. Without it, the HTTP/1
/// parser reads the header into its own 4 KiB buffer and bodies into theirs,
/// and rustls reads whole TLS records into its own, so the syscalls stay the
/// same size; the small write buffer (one segment) is kept.
fn client_socket_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

/// Counts the client connections pingora cuts off by a limit, and those
/// their clients abandon partway through a header.
struct ClientCutoffs;

impl HttpServerEvents for ClientCutoffs {
    fn header_timed_out(&self) {
        crate::metrics::client_cutoff("header_timeout");
    }
    fn idle_timed_out(&self) {
        crate::metrics::client_cutoff("keepalive_timeout");
    }
    fn header_too_large(&self) {
        crate::metrics::client_cutoff("header_too_large");
        crate::metrics::rejected(431);
    }
    fn header_abandoned(&self) {
        crate::metrics::client_abandoned_header();
    }
    fn h2_control_flood(&self) {
        crate::metrics::client_cutoff("h2_control_flood");
    }
}

fn worker_threads() -> usize {
    std::env::var("SWITCHYARD_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A port-0 address becomes a concrete free port, so it can be reported.
/// An upgrade takes over sockets by address: port 0 names none.
fn concrete(addr: SocketAddr, upgrade: bool, key: &str) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    if upgrade {
        bail!("{key}: --upgrade takes listeners over by address; port 0 names none");
    }
    let l = StdListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
    Ok(l.local_addr()?)
}

fn check_tls_files(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let read = |p: &Path, what: &str, marker: &str| -> anyhow::Result<()> {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("listen.https.{what}: cannot read {}", p.display()))?;
        if !text.contains(marker) {
            bail!("listen.https.{what}: {} holds no PEM {marker}", p.display());
        }
        Ok(())
    };
    read(cert, "cert", "CERTIFICATE")?;
    read(key, "key", "PRIVATE KEY")
}

/// Every header name the router expects clients and regions to send often:
/// the names it reads, its own, the ones its configuration names, and the
/// common ones of requests and answers. The HTTP/1 parsers take these
/// ready-made rather than parse them, and a name `http` does not know
/// (`x-request-id`, the partition header) is then not copied per message
/// (pingora's `set_known_header_names`).
fn expected_header_names(config: &switchyard_config::Config) -> Vec<http::HeaderName> {
    use crate::route::headers::*;
    use http::header;
    // The fields the router reads (X-Forwarded-For, X-Request-Id,
    // X-Freshness, the read-your-writes token, traceparent...), then the rest.
    let mut names: Vec<http::HeaderName> = crate::route::fields::NAMES.to_vec();
    names.extend([
        REGION,
        FENCING_TOKEN,
        FENCED,
        STALE,
        COMMIT_POSITION,
        WRITE_PENDING,
        REPLAYED_ON_READ,
        http::HeaderName::from_static("tracestate"),
        header::ACCEPT_ENCODING,
        header::ACCEPT_LANGUAGE,
        header::CACHE_CONTROL,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::LOCATION,
        header::ORIGIN,
        header::REFERER,
        header::SERVER,
        header::SET_COOKIE,
        header::USER_AGENT,
        header::VARY,
    ]);
    let configured = [
        config.consistency.partition.header.as_deref(),
        config.routing.geo.header.as_deref(),
        config.synthetic.as_ref().map(|s| s.header.as_str()),
    ];
    // A configured name was checked when the configuration was read; one
    // that would not parse is simply not registered.
    names.extend(
        configured
            .into_iter()
            .flatten()
            .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok()),
    );
    names
}
