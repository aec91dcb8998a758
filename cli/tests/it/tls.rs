use std::process::Command;

use crate::support::*;

/// A router with an HTTPS listener (a self-signed certificate for
/// `localhost`) in front of region `a`.
fn tls_router(a: &TestRegion) -> Router {
    tls_router_to("a", a.addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_rustls_negotiates_h2() {
    let a = region("a").await;
    let router = tls_router(&a);
    let https = router.https.expect("https bound");
    let url = format!("https://localhost:{}/kv/x", https.port());
    let resolve = format!("localhost:{}:127.0.0.1", https.port());
    let run = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "--resolve",
                &resolve,
            ])
            .args(args)
            .arg(&url)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let h2 = run(&["--http2"]);
    assert!(h2.starts_with("http/2 404"), "{h2}");
    assert!(h2.contains("x-switchyard-region: a"), "{h2}");
    let h1 = run(&["--http1.1"]);
    assert!(h1.starts_with("http/1.1 404"), "{h1}");
}

/// An HTTP/2 write without `Content-Length` (what `curl --http2 -T -` sends)
/// reaches the region whole and is logged whole, ahead of forwarding.
#[tokio::test(flavor = "multi_thread")]
async fn an_h2_write_without_content_length_is_logged_with_its_body() {
    let a = region("a").await;
    let router = tls_router(&a);
    let https = router.https.expect("https bound");
    let resolve = format!("localhost:{}:127.0.0.1", https.port());
    let mut curl = Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args([
            "--resolve",
            &resolve,
            "-H",
            "Idempotency-Key: h2-body",
            "-T",
            "-",
        ])
        .arg(format!("https://localhost:{}/kv/h2", https.port()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    {
        use std::io::Write;
        let mut stdin = curl.stdin.take().expect("stdin");
        stdin.write_all(b"streamed over h2").expect("write body");
    }
    let out = curl.wait_with_output().expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 201");
    assert_eq!(
        logged_intent_body(&router, "/kv/h2"),
        Some(switchyard_oplog::Body::Inline(b"streamed over h2".to_vec()))
    );
}
