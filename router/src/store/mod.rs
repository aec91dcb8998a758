//! What the router keeps on disk in `state_dir`: operator traffic state
//! (dials, drains, ramp progress), the ownership table, the op log and its
//! NATS forwarder, and this router's edge id. Every file that is replaced
//! whole goes through [`write_atomically`].

use std::io::Write;
use std::path::Path;

use anyhow::Context;

pub(crate) mod access_log;
pub(crate) mod oplog;
pub(crate) mod oplog_nats;
pub(crate) mod oplog_scan;
pub(crate) mod ownership;
pub(crate) mod secrets;
pub(crate) mod traffic;

/// Replaces `path` with `bytes` so that a crash leaves the old or the new file, whole.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomically_with_mode(path, bytes, 0o644)
}

/// [`write_atomically`], the new file created with permissions `mode`.
pub(crate) fn write_atomically_with_mode(
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// This router's name (in the fleet and in its op log): the config's, else
/// one made once and kept in the state directory.
pub(crate) fn edge_id(config: &switchyard_config::Config) -> anyhow::Result<String> {
    if let Some(id) = config.etcd.as_ref().and_then(|e| e.edge_id.as_ref()) {
        return Ok(id.clone());
    }
    let state_dir = &config.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("state_dir: cannot create {}", state_dir.display()))?;
    let path = state_dir.join("edge-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let id = format!("edge-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    write_atomically(&path, id.as_bytes())?;
    Ok(id)
}
