use std::process::Command;

use crate::support::*;

fn geo_config(us: &TestRegion, eu: &TestRegion, dir: &TempDir, geo_source: &str) -> String {
    format!(
        "{}regions:\n{}{}routing:
  policy: geo
  geo:
{geo_source}
    prefer: {{ EU: [eu, us], AS: [us], default: [us, eu] }}
  residency: {{ DE: EU, FR: EU }}
",
        header(dir),
        region_yaml("us", us.addr, "    compliance: { data_residency: US }\n"),
        region_yaml("eu", eu.addr, "    compliance: { data_residency: EU }\n"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn geo_by_source_address_from_the_cidr_table() {
    let (us, eu) = (region("us").await, region("eu").await);
    let dir = TempDir::new();
    let cfg = geo_config(
        &us,
        &eu,
        &dir,
        "    networks: { \"127.0.0.2/32\": DE, \"127.0.0.3/32\": JP }",
    );
    let router = Router::start_in(dir, &cfg);
    let url = router.url("/kv/x");
    assert_eq!(
        get_region(&client_from("127.0.0.2"), &url, None).await.1,
        "eu"
    );
    assert_eq!(
        get_region(&client_from("127.0.0.1"), &url, None).await.1,
        "us"
    );
    assert_eq!(
        get_region(&client_from("127.0.0.3"), &url, None).await.1,
        "us"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn residency_is_never_broken_even_in_failover() {
    let (us, eu) = (region("us").await, region("eu").await);
    let dir = TempDir::new();
    let cfg = geo_config(&us, &eu, &dir, "    networks: { \"127.0.0.2/32\": DE }");
    let router = Router::start_in(dir, &cfg);
    eu.set("health", serde_json::json!(503)).await;
    router.wait_healthy("eu", false).await;
    let before = us.requests();
    let resp = client_from("127.0.0.2")
        .get(router.url("/kv/x"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.expect("body");
    assert!(body.contains("residency zone EU"), "{body}");
    assert_eq!(
        us.requests(),
        before,
        "an EU client never reaches the US region"
    );
    // A client without a zone still fails over.
    assert_eq!(
        get_region(&client_from("127.0.0.1"), &router.url("/kv/x"), None)
            .await
            .1,
        "us"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn geo_by_trusted_cdn_header() {
    let (us, eu) = (region("us").await, region("eu").await);
    let dir = TempDir::new();
    let cfg = geo_config(&us, &eu, &dir, "    header: CF-IPCountry")
        + "trusted_proxies: [\"127.0.0.5\"]\n";
    let router = Router::start_in(dir, &cfg);
    let cdn = client_from("127.0.0.5");
    let from_cdn = |country: &'static str| {
        let req = cdn.get(router.url("/kv/x")).header("CF-IPCountry", country);
        async move { served_by(&req.send().await.expect("request")) }
    };
    assert_eq!(from_cdn("FR").await, "eu");
    assert_eq!(from_cdn("BR").await, "us");
}

/// Residency rests on what a client cannot forge: from a peer that is not a
/// trusted proxy, the geo header and `X-Forwarded-For` are dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_geo_header_or_forwarded_for_never_leaves_the_residency_zone() {
    let (us, eu) = (region("us").await, region("eu").await);
    let dir = TempDir::new();
    let cfg = geo_config(
        &us,
        &eu,
        &dir,
        "    header: CF-IPCountry\n    networks: { \"127.0.0.2/32\": DE }",
    ) + "trusted_proxies: [\"127.0.0.5\"]\n";
    let router = Router::start_in(dir, &cfg);
    let url = router.url("/_echo");
    // A German client (by its address) claiming Brazil, or claiming to
    // forward for a US address: its data stays in the EU, every time.
    let german = client_from("127.0.0.2");
    for i in 0..30 {
        let req = if i % 2 == 0 {
            german.get(&url).header("CF-IPCountry", "BR")
        } else {
            german.get(&url).header("X-Forwarded-For", "127.0.0.1")
        };
        let resp = req.send().await.expect("request");
        let (status, region) = (resp.status(), served_by(&resp));
        let body = resp.text().await.expect("body");
        assert_eq!(region, "eu", "request {i}: {status} {body}");
        let echo: serde_json::Value = serde_json::from_str(&body).expect("echo");
        let seen = echo["headers"].to_string().to_lowercase();
        assert!(!seen.contains("cf-ipcountry"), "{seen}");
        assert!(
            seen.contains(r#"["x-forwarded-for","127.0.0.2"]"#),
            "{seen}"
        );
    }
    // A client claiming France is not believed either: it is where it is.
    let resp = client_from("127.0.0.1")
        .get(&url)
        .header("CF-IPCountry", "FR")
        .send()
        .await
        .expect("request");
    assert_eq!(served_by(&resp), "us");
    // Through the trusted proxy, the hop before it is the client.
    let resp = client_from("127.0.0.5")
        .get(&url)
        .header("X-Forwarded-For", "127.0.0.2")
        .send()
        .await
        .expect("request");
    assert_eq!(served_by(&resp), "eu");
    // Explain applies the same boundary.
    let (code, explained) = router
        .admin(
            reqwest::Method::POST,
            "/admin/v1/explain",
            Some(serde_json::json!({"path": "/kv/x", "client": "127.0.0.2", "headers": {"CF-IPCountry": "BR"}})),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(explained["request"]["residency_zone"], "EU", "{explained}");
    assert_eq!(explained["pick"], "eu");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_warns_when_the_geo_header_has_no_trusted_proxy() {
    let (us, eu) = (region("us").await, region("eu").await);
    let dir = TempDir::new();
    let path = dir.write(
        "switchyard.yaml",
        &geo_config(&us, &eu, &dir, "    header: CF-IPCountry"),
    );
    let (code, err) = run_switchyard(&["check"], &path, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: routing.geo.header is CF-IPCountry, but trusted_proxies is empty"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn geo_from_a_maxmind_database() {
    let (us, eu) = (region("us").await, region("eu").await);
    let dir = TempDir::new();
    let db = dir.0.join("test-country.mmdb");
    let out = Command::new("perl")
        .arg(fixture("write-test-mmdb.pl"))
        .arg(&db)
        .output()
        .expect("perl runs (libmaxmind-db-writer-perl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = geo_config(&us, &eu, &dir, "    mmdb: test-country.mmdb");
    let router = Router::start_in(dir, &cfg);
    let url = router.url("/kv/x");
    // 127.0.0.4 is FR in the database: EU prefers eu.
    assert_eq!(
        get_region(&client_from("127.0.0.4"), &url, None).await.1,
        "eu"
    );
    // 127.0.0.5 is JP (continent AS): AS prefers us.
    assert_eq!(
        get_region(&client_from("127.0.0.5"), &url, None).await.1,
        "us"
    );
    assert_eq!(
        get_region(&client_from("127.0.0.1"), &url, None).await.1,
        "us"
    );
}
