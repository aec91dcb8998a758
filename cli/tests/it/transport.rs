//! How the router reaches regions: TLS verified against a CA, a name and a
//! client certificate; HTTP/2 by ALPN and by prior knowledge; pooled
//! connections reused; a certificate that fails marks the endpoint down
//! with the reason, never a plaintext fallback.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use switchyard_region::ServerTls;

use crate::support::*;

/// A certificate authority that signs leaves for tests.
pub struct TestCa {
    pub pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).expect("ca");
        TestCa {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A leaf for `localhost` and 127.0.0.1: (certificate PEM, key PEM).
    pub fn leaf(&self, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A region's server TLS, asking for client certificates from `clients` if given.
    pub fn server(&self, clients: Option<&TestCa>) -> ServerTls {
        let (cert_pem, key_pem) = self.leaf(ExtendedKeyUsagePurpose::ServerAuth);
        ServerTls {
            cert_pem,
            key_pem,
            client_ca_pem: clients.map(|c| c.pem.clone()),
        }
    }
}

/// One region `a` at `endpoint` with `extra` lines in its block.
fn config(dir: &TempDir, endpoint: &str, extra: &str) -> String {
    format!(
        "{}regions:\n{}routing:\n  policy: weighted\n",
        header(dir),
        region_yaml("a", endpoint, extra)
    )
}

/// The first endpoint of region `a` in the status document.
async fn endpoint_status(router: &Router) -> serde_json::Value {
    router.status().await["regions"]["a"]["endpoints"][0].clone()
}

/// Waits until region `a`'s endpoint is down with a reason containing `why`.
async fn wait_down_because(router: &Router, why: &str) -> String {
    let reason = std::sync::Mutex::new(String::new());
    eventually(Duration::from_secs(10), || async {
        let e = endpoint_status(router).await;
        let now = e["reason"].as_str().unwrap_or("").to_string();
        let down = e["healthy"] == false && !now.is_empty() && now.contains(why);
        *reason.lock().expect("lock") = now;
        down
    })
    .await;
    reason.into_inner().expect("lock")
}

async fn echo_version(router: &Router) -> (u16, String) {
    let resp = reqwest::get(router.url("/_echo/x")).await.expect("request");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (status, body["version"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_behind_tls_is_verified_and_spoken_to_over_h2_on_reused_connections() {
    let ca = TestCa::new("regions CA");
    let a = region_over("a", Some(&ca.server(None))).await;
    let dir = TempDir::new();
    dir.write("ca.pem", &ca.pem);
    let endpoint = format!("https://127.0.0.1:{}", a.addr.port());
    let cfg = config(&dir, &endpoint, "    tls: { ca: ca.pem }\n");
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("a", true).await;
    for _ in 0..20 {
        let (status, version) = echo_version(&router).await;
        assert_eq!(status, 200);
        // auto: ALPN offered h2 and the region took it.
        assert_eq!(version, "HTTP/2.0");
    }
    let e = endpoint_status(&router).await;
    assert_eq!(e["tls"], true);
    assert!(e["reason"].is_null(), "{e}");
    let m = router.metrics_text().await;
    let reused = metric(
        &m,
        "switchyard_upstream_connections_total{region=\"a\",reused=\"true\"}",
    );
    let new = metric(
        &m,
        "switchyard_upstream_connections_total{region=\"a\",reused=\"false\"}",
    );
    assert!(
        reused >= 18.0 && new <= 2.0,
        "reused {reused}, new {new}\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_h1_and_h2_by_prior_knowledge_are_what_the_region_sees() {
    let ca = TestCa::new("regions CA");
    let tls = region_over("a", Some(&ca.server(None))).await;
    let plain = region_over("a", None).await;
    for (endpoint, extra, want) in [
        (
            format!("https://localhost:{}", tls.addr.port()),
            "    tls: { ca: ca.pem }\n    protocol: h1\n",
            "HTTP/1.1",
        ),
        (plain.addr.to_string(), "    protocol: h2\n", "HTTP/2.0"),
        (plain.addr.to_string(), "", "HTTP/1.1"),
    ] {
        let dir = TempDir::new();
        dir.write("ca.pem", &ca.pem);
        let cfg = config(&dir, &endpoint, extra);
        let router = Router::start_in(dir, &cfg);
        router.wait_healthy("a", true).await;
        for _ in 0..5 {
            assert_eq!(
                echo_version(&router).await,
                (200, want.to_string()),
                "{extra}"
            );
        }
        let m = router.metrics_text().await;
        let reused = metric(
            &m,
            "switchyard_upstream_connections_total{region=\"a\",reused=\"true\"}",
        );
        assert!(reused >= 4.0, "{extra}: reused {reused}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_fails_verification_takes_the_endpoint_down_until_a_reload_trusts_it() {
    let ca = TestCa::new("regions CA");
    let other = TestCa::new("some other CA");
    let a = region_over("a", Some(&ca.server(None))).await;
    let dir = TempDir::new();
    dir.write("ca.pem", &other.pem);
    let endpoint = format!("https://127.0.0.1:{}", a.addr.port());
    let cfg = config(&dir, &endpoint, "    tls: { ca: ca.pem }\n");
    let wrong_name = config(
        &dir,
        &endpoint,
        "    tls: { ca: ca.pem, sni: api.example }\n",
    );
    let router = Router::start_in(dir, &cfg);
    let reason = wait_down_because(&router, "UnknownIssuer").await;
    assert!(reason.contains("127.0.0.1"), "{reason}");
    // Never a plaintext fallback: nothing reached the region. (Its only
    // region down, the service is in panic mode and the read is tried
    // anyway: the handshake refuses the certificate again.)
    let resp = reqwest::get(router.url("/_echo/x")).await.expect("request");
    assert!(resp.status().is_server_error(), "{}", resp.status());
    assert_eq!(a.requests(), 0);

    // The right CA in the same file: a reload picks it up.
    router.dir.write("ca.pem", &ca.pem);
    assert!(router.reload_with(&cfg).await.status().is_success());
    router.wait_healthy("a", true).await;
    assert_eq!(echo_version(&router).await.0, 200);

    // A name the certificate does not carry fails too.
    assert!(router.reload_with(&wrong_name).await.status().is_success());
    wait_down_because(&router, "not valid for name \"api.example\"").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_that_requires_a_client_certificate_gets_the_configured_one() {
    let ca = TestCa::new("regions CA");
    let clients = TestCa::new("edge clients CA");
    let a = region_over("a", Some(&ca.server(Some(&clients)))).await;
    let dir = TempDir::new();
    dir.write("ca.pem", &ca.pem);
    let (cert, key) = clients.leaf(ExtendedKeyUsagePurpose::ClientAuth);
    dir.write("edge-client.pem", &cert);
    dir.write("edge-client.key", &key);
    let endpoint = format!("https://localhost:{}", a.addr.port());

    let without = config(&dir, &endpoint, "    tls: { ca: ca.pem }\n");
    let with = config(
        &dir,
        &endpoint,
        "    tls: { ca: ca.pem, client_cert: edge-client.pem, client_key: edge-client.key }\n",
    );
    let router = Router::start_in(dir, &without);
    // With TLS 1.3 the region refuses the missing certificate after the
    // client's handshake is done: the probe sees either its alert
    // (`CertificateRequired`) or the connection closing, as timing goes.
    let reason = wait_down_because(&router, "").await;
    assert!(!reason.is_empty());
    assert_eq!(a.requests(), 0);

    assert!(router.reload_with(&with).await.status().is_success());
    router.wait_healthy("a", true).await;
    assert_eq!(echo_version(&router).await.0, 200);
}

#[test]
fn tls_settings_that_cannot_work_are_config_errors_with_their_line() {
    let dir = TempDir::new();
    let cases = [
        (
            "    tls: { ca: missing.pem }\n",
            "regions.a.tls.ca`: cannot read",
        ),
        (
            "    tls: { client_cert: c.pem }\n",
            "needs both `client_cert` and `client_key`",
        ),
        ("    protocol: h3\n", "regions.a.protocol"),
    ];
    dir.write("c.pem", "x");
    for (extra, want) in cases {
        let path = dir.write("bad.yaml", &config(&dir, "https://127.0.0.1:9", extra));
        let (code, out) = run_switchyard(&["check"], &path, &[]);
        assert_eq!(code, Some(2), "{extra}: {out}");
        assert!(out.contains("bad.yaml:11:"), "{extra}: {out}");
        assert!(out.contains(want), "{extra}: {out}");
    }
    // A file that is there but holds no certificate: the router says which key.
    dir.write("junk.pem", "not a certificate\n");
    let path = dir.write(
        "junk.yaml",
        &config(&dir, "https://127.0.0.1:9", "    tls: { ca: junk.pem }\n"),
    );
    let (code, out) = run_switchyard(&["run"], &path, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("regions.a.tls.ca") && out.contains("no PEM certificate"),
        "{out}"
    );
}

/// A region that answers every request `200` with `X-Backend-Mark: 1`, and
/// keeps each request's header block as it arrived, byte for byte.
async fn raw_region() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        kept.lock()
                            .expect("lock")
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let answer =
                            b"HTTP/1.1 200 OK\r\nX-Backend-Mark: 1\r\nContent-Length: 2\r\n\r\nok";
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// One raw HTTP/1.1 request through the router; the answer's header block.
async fn raw_get(router: &Router, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(router.http)
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Client-Mark: 1\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn header_names_go_on_in_canonical_case_unless_told_to_keep_it() {
    for preserve in [false, true] {
        let (addr, seen) = raw_region().await;
        let dir = TempDir::new();
        let listen = format!("listen: {{ http: 127.0.0.1:0, preserve_header_case: {preserve} }}");
        let cfg = format!(
            "{}regions:\n{}routing:\n  policy: weighted\n",
            header(&dir).replace("listen: { http: 127.0.0.1:0 }", &listen),
            region_yaml("raw", addr, "")
        );
        let router = Router::start_in(dir, &cfg);
        router.wait_healthy("raw", true).await;
        let answer = raw_get(&router, "/kv/case").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let forwarded = seen
            .lock()
            .expect("lock")
            .iter()
            .find(|h| h.starts_with("GET /kv/case "))
            .cloned()
            .expect("the request reached the region");
        // Standard names are written in their usual case either way.
        assert!(forwarded.contains("\r\nHost: localhost\r\n"), "{forwarded}");
        if preserve {
            assert!(
                forwarded.contains("\r\nX-Client-Mark: 1\r\n"),
                "{forwarded}"
            );
            assert!(answer.contains("\r\nX-Backend-Mark: 1"), "{answer}");
        } else {
            assert!(
                forwarded.contains("\r\nx-client-mark: 1\r\n"),
                "{forwarded}"
            );
            assert!(answer.contains("\r\nx-backend-mark: 1"), "{answer}");
        }
        // The router's own headers are there in both modes.
        assert!(
            forwarded
                .to_ascii_lowercase()
                .contains("\r\nx-forwarded-for: 127.0.0.1"),
            "{forwarded}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nx-switchyard-region: raw"),
            "{answer}"
        );
    }
}
