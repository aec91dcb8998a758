//! The console, driven in a real headless Chromium over the DevTools
//! protocol against the real router and reference regions. Each view's
//! screenshot is saved under `target/tmp/console-screenshots/`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use reqwest::Method;
use serde_json::json;

use crate::support::*;

const SYNTHETIC: &str = "synthetic: { header: X-Switchyard-Synthetic, token_env: SY_SYNTHETIC }\n";

fn config(a: &TestRegion, b: &TestRegion, c: &TestRegion, dir: &TempDir) -> String {
    format!(
        "{}regions:\n{}{}{}routing:\n  policy: weighted\n  weights: {{ a: 40, b: 40, c: 20 }}\n  outlier: {{ base_ejection: 20s }}\n\
         safety: {{ min_serving_regions: 1, max_dial_step: 30 }}\n\
         consistency: {{ owners: {{ default: a, eu-tenant: b }} }}\n\
         {SYNTHETIC}ramps:\n  c-launch:\n    region: c\n    steps: [synthetic, 5, 25, 50, 75, 100]\n    hold: 1m\n    gates: {{ max_error_rate: 0.05 }}\n",
        header(dir),
        region_yaml("a", a.addr, "    compliance: { data_residency: US }\n"),
        region_yaml("b", b.addr, "    compliance: { data_residency: EU }\n"),
        region_yaml("c", c.addr, "    dial: 0\n"),
    )
}

/// A headless Chromium, and the temporary folder it runs with: what it
/// leaves there (its singleton socket folder) goes when the test ends.
pub(crate) struct Chromium {
    // Declared first, so it is dropped (and the browser stopped) first.
    browser: Browser,
    _tmp: TempDir,
}

impl std::ops::Deref for Chromium {
    type Target = Browser;
    fn deref(&self) -> &Browser {
        &self.browser
    }
}

pub(crate) fn browser() -> Chromium {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is installed (`scripts/setup --test` installs Debian's chromium)");
    let tmp = TempDir::new();
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium))
            .headless(true)
            // Tests run as root in CI; Chromium's sandbox refuses root.
            .sandbox(false)
            .window_size(Some((1400, 1000)))
            .idle_browser_timeout(Duration::from_secs(120))
            .process_envs(Some(
                [("TMPDIR".to_string(), tmp.0.to_string_lossy().into_owned())].into(),
            ))
            .build()
            .expect("launch options"),
    )
    .expect("Chromium starts");
    Chromium { browser, _tmp: tmp }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn screenshot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("console screenshot: {}", path.display());
}

/// Evaluates the expression `js` in the page; its value as JSON (null
/// when undefined). Arrays and objects come back whole, through JSON.
fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    tab.evaluate(&format!("JSON.stringify(({js}))"), false)
        .expect("evaluate")
        .value
        .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()))
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until `js` is true in the page.
fn page_shows(tab: &Tab, js: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if eval(tab, js) == json!(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed `{js}`; it shows:\n{}",
            eval(tab, "document.body.innerText")
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn text_of(tab: &Tab, selector: &str) -> String {
    eval(
        tab,
        &format!(
            "(document.querySelector({}) || {{}}).innerText || ''",
            json!(selector)
        ),
    )
    .as_str()
    .unwrap_or("")
    .to_string()
}

fn click(tab: &Tab, selector: &str) {
    tab.wait_for_element(selector)
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

fn confirm(tab: &Tab, expect: &str) {
    page_shows(
        tab,
        "!document.querySelector('#confirm').hidden",
        Duration::from_secs(5),
    );
    let asked = text_of(tab, "#confirm-text");
    assert!(asked.contains(expect), "asked {asked:?}");
    click(tab, "#confirm-ok");
}

fn set_dial_from_page(tab: &Tab, region: &str, percent: u32) {
    let input = format!("tr[data-region='{region}'] input[name=percent]");
    // Set the value and submit in one step: the row is rebuilt as status
    // arrives unless its input has focus, and a click can land between.
    eval(
        tab,
        &format!(
            "(() => {{ const i = document.querySelector({sel}); i.focus(); i.value = '{percent}'; \
             i.form.requestSubmit(); return true; }})()",
            sel = json!(input)
        ),
    );
    confirm(tab, &format!("dial of {region} to {percent} %"));
}

fn traffic(router: &Router, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let url = router.url("/kv/console");
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let req = if i.is_multiple_of(5) {
                client.put(&url).body(format!("v{i}"))
            } else {
                client.get(&url)
            };
            let _ = req.header("X-Partition", format!("p{i}")).send().await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_the_router_and_acts_on_it() {
    let (a, b, c) = (region("a").await, region("b").await, region("c").await);
    let dir = TempDir::new();
    let cfg = config(&a, &b, &c, &dir);
    let router = Router::start_with_env(dir, &cfg, &[("SY_SYNTHETIC", "synthetic-secret")]);
    router.wait_healthy("b", true).await;
    let admin = router.admin.expect("admin");
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&router, stop.clone());

    let browser = browser();
    let tab = browser.new_tab().expect("tab");
    let console = format!("http://{admin}/console");

    // Without a token: the login box and nothing else.
    tokio::task::block_in_place(|| {
        tab.navigate_to(&console).expect("navigate");
        tab.wait_until_navigated().expect("loaded");
        page_shows(
            &tab,
            "!document.querySelector('#login').hidden",
            Duration::from_secs(5),
        );
        assert_eq!(
            eval(&tab, "document.querySelector('#app').hidden"),
            json!(true)
        );
        let shown = eval(&tab, "document.body.innerText").to_string();
        assert!(
            !shown.contains("eu-tenant"),
            "data shown without a token: {shown}"
        );
        // A wrong token is refused and stays signed out.
        tab.wait_for_element("#token")
            .expect("token box")
            .click()
            .expect("focus");
        tab.type_str("not-the-token-at-all").expect("type");
        tab.press_key("Enter").expect("submit");
        page_shows(
            &tab,
            "document.querySelector('#login-error').innerText.includes('401')",
            Duration::from_secs(5),
        );
        screenshot(&tab, "01-login");

        // The token in the fragment signs in, then leaves the address bar.
        tab.navigate_to("about:blank").expect("navigate");
        tab.wait_until_navigated().expect("blank");
        tab.navigate_to(&format!("{console}#token={TOKEN}"))
            .expect("navigate");
        tab.wait_until_navigated().expect("loaded");
        page_shows(
            &tab,
            "!!document.querySelector(\"tr[data-region='c'] .health .badge\")",
            Duration::from_secs(5),
        );
        assert!(
            !eval(&tab, "location.href").to_string().contains(TOKEN),
            "the token stays in the URL"
        );
        assert_eq!(
            eval(&tab, "sessionStorage.getItem('switchyard.token')"),
            json!(TOKEN)
        );
        assert_eq!(eval(&tab, "document.cookie"), json!(""));
        let row = text_of(&tab, "tr[data-region='a']");
        assert!(row.contains("US") && row.contains("healthy"), "{row}");
    });

    // A dial set from the page reaches the router.
    tokio::task::block_in_place(|| set_dial_from_page(&tab, "b", 80));
    eventually(Duration::from_secs(5), || async {
        router.status().await["regions"]["b"]["dial"] == json!(80)
    })
    .await;
    tokio::task::block_in_place(|| {
        page_shows(
            &tab,
            "document.querySelector(\"tr[data-region='b'] .dial\").innerText === '80 %'",
            Duration::from_secs(2),
        );
        screenshot(&tab, "02-regions");
    });

    // A refusal is shown as the router said it.
    let (code, refusal) = router
        .admin(
            Method::PUT,
            "/admin/v1/regions/b/dial",
            Some(json!({"percent": 5})),
        )
        .await;
    assert_eq!((code, &refusal["rule"]), (409, &json!("max_dial_step")));
    tokio::task::block_in_place(|| {
        set_dial_from_page(&tab, "b", 5);
        page_shows(
            &tab,
            "document.querySelector('#result').classList.contains('refused')",
            Duration::from_secs(5),
        );
        let shown = text_of(&tab, "#result");
        assert!(shown.contains("409"), "{shown}");
        assert!(shown.contains("max_dial_step"), "{shown}");
        let reason = refusal["error"].as_str().expect("reason");
        assert!(shown.contains(reason), "{reason:?} not in {shown}");
        screenshot(&tab, "03-refusal");
    });
    assert_eq!(router.status().await["regions"]["b"]["dial"], json!(80));

    // An ejection shows within a second of the router making it.
    b.set("fail", json!(500)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.status().await["regions"]["b"]["ejected"] != json!(true) {
        assert!(Instant::now() < deadline, "b was never ejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ejected_at = Instant::now();
    tokio::task::block_in_place(|| {
        page_shows(
            &tab,
            "document.querySelector(\"tr[data-region='b'] .ejection\").innerText.includes('ejected')",
            Duration::from_secs(1),
        );
        eprintln!(
            "ejection shown {:?} after the router made it",
            ejected_at.elapsed()
        );
        let row = text_of(&tab, "tr[data-region='b'] .ejection");
        assert!(row.contains("s left"), "{row}");
        screenshot(&tab, "04-ejection");
    });
    b.set("fail", json!(0)).await;

    // A ramp started from the page; its steps and history shown.
    tokio::task::block_in_place(|| {
        click(&tab, "button[data-view=ramps]");
        let start = "article[data-ramp='c-launch'] button";
        tab.wait_for_element(start).expect("ramp buttons");
        eval(
            &tab,
            &format!(
                "document.querySelectorAll({})[0].click(), true",
                json!(start)
            ),
        );
        confirm(&tab, "Start the ramp c-launch");
        page_shows(
            &tab,
            "document.querySelector('#result-title').innerText.includes('ramps/c-launch/start')",
            Duration::from_secs(5),
        );
        let shown = text_of(&tab, "#result");
        assert!(shown.starts_with("Done"), "{shown}");
    });
    eventually(Duration::from_secs(5), || async {
        router.status().await["ramps"]["c-launch"]["state"] == json!("running")
    })
    .await;
    tokio::task::block_in_place(|| {
        page_shows(
            &tab,
            "document.querySelector(\"article[data-ramp='c-launch'] .steps .current\").innerText === 'synthetic' \
             && document.querySelector(\"article[data-ramp='c-launch'] .timeline li\") !== null",
            Duration::from_secs(2),
        );
        screenshot(&tab, "05-ramps");

        // Traffic charts: one line per region and class, drawn from samples.
        click(&tab, "button[data-view=traffic]");
        page_shows(
            &tab,
            "document.querySelectorAll('#chart-rps path').length >= 2",
            Duration::from_secs(5),
        );
        let legend = text_of(&tab, "#chart-rps .legend");
        assert!(
            legend.contains("a read") && legend.contains("a write"),
            "{legend}"
        );
        screenshot(&tab, "06-traffic");

        // The promotion's preview from the page: what it would strand.
        click(&tab, "button[data-view=ownership]");
        tab.wait_for_element("#promote-form").expect("form");
        eval(
            &tab,
            "(() => { const f = document.querySelector('#promote-form'); f.partition.value = 'eu-tenant'; \
             f.to.value = 'a'; document.querySelector('#promote-preview').click(); return true; })()",
        );
        page_shows(
            &tab,
            "!!document.querySelector('#preview-table') && \
             document.querySelector('#preview-table tbody').innerText.includes('eu-tenant')",
            Duration::from_secs(5),
        );
        // Promotion from the page: the history and the new epoch appear.
        eval(
            &tab,
            "(() => { const f = document.querySelector('#promote-form'); f.partition.value = 'eu-tenant'; \
             f.to.value = 'a'; f.requestSubmit(); return true; })()",
        );
        confirm(&tab, "Promote partition eu-tenant to a");
        page_shows(
            &tab,
            "document.querySelector(\"tr[data-partition='eu-tenant']\").innerText.includes('2') \
             && document.querySelector('#promotions-table tbody').innerText.includes('1 → 2')",
            Duration::from_secs(5),
        );
        screenshot(&tab, "07-ownership");

        // Explain: the candidates and the rule that dropped each.
        click(&tab, "button[data-view=explain]");
        eval(
            &tab,
            "(() => { const f = document.querySelector('#explain-form'); f.method.value = 'PUT'; \
             f.path.value = '/kv/x'; f.headers.value = 'X-Partition: eu-tenant'; f.requestSubmit(); return true; })()",
        );
        page_shows(
            &tab,
            "document.querySelector('#explain-out').innerText.includes(\"not the partition's owner\")",
            Duration::from_secs(5),
        );
        screenshot(&tab, "08-explain");
    });
    let owners = router.status().await["owners"].clone();
    assert_eq!(owners["eu-tenant"], json!({"region": "a", "epoch": 2}));

    stop.store(true, Ordering::Relaxed);
    load.await.expect("traffic");
}

#[tokio::test]
async fn the_console_page_is_served_without_a_token_and_the_api_still_needs_one() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&dir, "", &a);
    let router = Router::start_in(dir, &cfg);
    let admin = router.admin.expect("admin");
    let client = reqwest::Client::new();
    let page = client
        .get(format!("http://{admin}/console"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.expect("html");
    assert!(html.contains("/console/app.js"), "{html}");
    for asset in ["/console/app.js", "/console/app.css"] {
        let r = client
            .get(format!("http://{admin}{asset}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{asset}");
    }
    for api in ["/admin/v1/status", "/admin/v1/series"] {
        let r = client
            .get(format!("http://{admin}{api}"))
            .send()
            .await
            .expect("api");
        assert_eq!(r.status(), 401, "{api} without a token");
    }
    // The series: samples once a second, per region.
    eventually(Duration::from_secs(5), || async {
        let (code, body) = router.admin(Method::GET, "/admin/v1/series", None).await;
        code == 200
            && body["samples"]
                .as_array()
                .and_then(|s| s.last())
                .is_some_and(|s| s["regions"][0][0] == json!("a"))
    })
    .await;
}

/// Opens a reconcile report in Chromium: the promotion label lies inside
/// its chart, the already-present writes are folded, and a screenshot and
/// a printed PDF are saved as `name`.
pub(crate) fn check_report_renders(report: &std::path::Path, name: &str) {
    let browser = browser();
    let tab = browser.new_tab().expect("tab");
    tab.navigate_to(&format!("file://{}", report.display()))
        .expect("navigate");
    tab.wait_until_navigated().expect("loaded");
    let clipped = eval(
        &tab,
        "Array.from(document.querySelectorAll('svg')).flatMap((s) => { const box = s.getBoundingClientRect(); \
         return Array.from(s.querySelectorAll('text')).filter((t) => { const r = t.getBoundingClientRect(); \
         return r.left < box.left - 0.5 || r.right > box.right + 0.5; }).map((t) => t.textContent); })",
    );
    assert_eq!(clipped, json!([]), "labels outside their chart");
    assert_eq!(
        eval(&tab, "document.querySelector('#already-present').open"),
        json!(false)
    );
    screenshot(&tab, name);
    let pdf = tab.print_to_pdf(None).expect("print");
    let path = screenshots().join(format!("{name}.pdf"));
    std::fs::write(&path, pdf).expect("write pdf");
    eprintln!("printed report: {}", path.display());
}
