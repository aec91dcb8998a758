//! Reading a log published to a NATS JetStream stream: every message from
//! the first to the last one there when reading began, in stream order.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use crate::codec::{self, Frame};

/// Calls `each` with every message's stream sequence and its decoded frame
/// (one record per message, unsalted).
pub async fn read(url: &str, stream: &str, mut each: impl FnMut(u64, Frame)) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let js = jetstream::new(client);
    let mut s = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream} not found on {url}"))?;
    let last = s.info().await?.state.last_sequence;
    if last == 0 {
        return Ok(());
    }
    let consumer = s
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        let seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        each(seq, codec::decode(&msg.payload, codec::NO_SALT));
        if seq >= last {
            break;
        }
    }
    Ok(())
}
