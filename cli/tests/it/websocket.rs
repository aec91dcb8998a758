//! WebSocket through the router: on routes that allow it, pinned to the
//! region that took the upgrade, counted while open.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_echo_goes_through_pinned_and_counted() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routes:\n  /ws/: {{ service: api, websocket: true }}\n  /: api\nrouting:\n  policy: weighted\n",
        header(&dir),
        region_yaml("a", a.addr, "")
    );
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("a", true).await;

    let url = format!("ws://{}/ws/echo", router.http);
    let (mut ws, resp) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()
            .get("x-switchyard-region")
            .map(|v| v.as_bytes()),
        Some(&b"a"[..])
    );
    for i in 0..3 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("no error");
        assert_eq!(back, Message::text(text));
    }
    assert_eq!(a.region.ws_open.load(Ordering::Relaxed), 1);
    assert_eq!(router.status().await["regions"]["a"]["websockets"], 1);
    // The gauge is published with the region's others, after each probe.
    eventually(Duration::from_secs(5), || async {
        let m = router.metrics_text().await;
        m.contains("switchyard_region_websockets_open{region=\"a\"} 1")
    })
    .await;

    let bye = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.expect("close");
    eventually(Duration::from_secs(5), || async {
        router.status().await["regions"]["a"]["websockets"] == 0
            && a.region.ws_open.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(*a.region.ws_close_codes.lock().expect("lock"), vec![1000]);

    // A path whose route does not allow it: refused, never upgraded.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/kv/x", router.http)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400)
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_open_websockets_with_a_close_frame_at_the_deadline() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}shutdown_grace: 1s\nregions:\n{}routes:\n  /ws/: {{ service: api, websocket: true }}\nrouting:\n  policy: weighted\n",
        header(&dir),
        region_yaml("a", a.addr, "")
    );
    let mut router = Router::start_in(dir, &cfg);
    router.wait_healthy("a", true).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", router.http))
        .await
        .expect("upgrade");
    ws.send(Message::text("still here")).await.expect("send");
    assert!(ws.next().await.is_some_and(|m| m.is_ok()));

    let stopped = std::time::Instant::now();
    router.signal(Signal::TERM);
    let last = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the router ends the conversation")
        .expect("a frame before the end")
        .expect("not an error");
    let took = stopped.elapsed();
    match last {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(900),
        "closed at the deadline, not before: {took:?}"
    );
    eventually(Duration::from_secs(5), || async {
        a.region
            .ws_close_codes
            .lock()
            .expect("lock")
            .contains(&1001)
    })
    .await;
    assert_eq!(router.wait_exit(Duration::from_secs(10)), Some(0));
}
