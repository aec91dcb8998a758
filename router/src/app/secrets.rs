//! The secrets a topology is built with, read once at start and kept across
//! reloads: the read-your-writes signing key and the synthetic marker's token.

use std::sync::Arc;

use anyhow::bail;

use switchyard_config::Config;

use crate::route::topology::Secrets;

/// Reads the secrets the config names: from the environment, else (the
/// read-your-writes key of a single router) from the state directory.
pub(super) fn load(config: &Config) -> anyhow::Result<Secrets> {
    let env = &config.consistency.ryw_key_env;
    let min = crate::store::secrets::MIN_RYW_KEY_BYTES;
    let ryw_key: Arc<[u8]> = match std::env::var(env).ok().filter(|s| !s.is_empty()) {
        Some(s) if s.len() < min => bail!(
            "consistency.ryw.key_env: {env} holds {} bytes; a read-your-writes key needs at least {min}",
            s.len()
        ),
        Some(s) => Arc::from(s.into_bytes()),
        None if config.etcd.is_some() => bail!(
            "consistency.ryw.key_env: {env} is unset; in fleet mode every router must sign read-your-writes tokens with the same key, so set it (at least {min} bytes) on each of them"
        ),
        None => Arc::from(crate::store::secrets::ryw_key(&config.state_dir)?),
    };
    let synthetic_token = config.synthetic.as_ref().and_then(|m| {
        let token = std::env::var(&m.token_env).ok().filter(|t| !t.is_empty());
        if token.is_none() {
            tracing::warn!(env = %m.token_env, "synthetic token unset: no request is treated as synthetic");
        }
        token.map(Arc::from)
    });
    Ok(Secrets {
        ryw_key,
        synthetic_token,
    })
}
