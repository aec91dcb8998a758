//! The secrets a topology is built with, read once at start and kept across
//! reloads: the read-your-writes signing key and the synthetic marker's token.

use std::sync::Arc;

use switchyard_config::Config;

use crate::route::topology::Secrets;

/// Reads the secrets the config names from the environment.
pub(super) fn load(config: &Config) -> anyhow::Result<Secrets> {
    let env = &config.consistency.ryw_key_env;
    let ryw_key: Arc<[u8]> = match std::env::var(env).ok().filter(|s| !s.is_empty()) {
        Some(s) => Arc::from(s.into_bytes()),
        None => {
            tracing::warn!(
                env,
                "read-your-writes key unset: using a random key for this process"
            );
            let key: [u8; 32] = rand::random();
            Arc::from(key.to_vec())
        }
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
