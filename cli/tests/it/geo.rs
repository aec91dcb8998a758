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
    let cfg = geo_config(&us, &eu, &dir, "    header: CF-IPCountry");
    let router = Router::start_in(dir, &cfg);
    let client = reqwest::Client::new();
    let resp = client
        .get(router.url("/kv/x"))
        .header("CF-IPCountry", "FR")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-switchyard-region"], "eu");
    let resp = client
        .get(router.url("/kv/x"))
        .header("CF-IPCountry", "BR")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-switchyard-region"], "us");
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
