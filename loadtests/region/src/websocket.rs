//! `GET /ws/echo`: a WebSocket that echoes every text and binary message,
//! counts itself open while it lives, and keeps the close code its client
//! sent (so a test can see how the edge closed it).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;

use crate::Region;

pub async fn echo(State(r): State<Arc<Region>>, upgrade: WebSocketUpgrade) -> Response {
    r.requests.fetch_add(1, Ordering::Relaxed);
    let name = r.name.clone();
    let mut resp = upgrade.on_upgrade(move |socket| session(r, socket));
    if let Ok(v) = name.parse() {
        resp.headers_mut().insert(crate::REGION_HEADER, v);
    }
    resp
}

async fn session(r: Arc<Region>, mut socket: WebSocket) {
    r.ws_open.fetch_add(1, Ordering::Relaxed);
    while let Some(Ok(msg)) = socket.recv().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if socket.send(msg).await.is_err() {
                    break;
                }
            }
            Message::Close(frame) => {
                if let Ok(mut codes) = r.ws_close_codes.lock() {
                    codes.push(frame.as_ref().map_or(1005, |f| f.code));
                }
                break;
            }
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    r.ws_open.fetch_sub(1, Ordering::Relaxed);
}
