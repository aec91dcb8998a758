//! Secrets kept in `state_dir`: the read-your-writes signing key, when the
//! operator gives none, is made once and kept (mode 0600), so tokens outlive
//! reloads and restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};

const RYW_KEY_FILE: &str = "ryw.key";
/// The least a read-your-writes key may hold.
pub(crate) const MIN_RYW_KEY_BYTES: usize = 32;

/// The key kept in `state_dir`, made (32 random bytes) when there is none.
pub(crate) fn ryw_key(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = state_dir.join(RYW_KEY_FILE);
    match std::fs::read(&path) {
        Ok(key) if key.len() >= MIN_RYW_KEY_BYTES => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the read-your-writes key file is readable by others");
            }
            Ok(key)
        }
        Ok(key) => bail!(
            "{}: holds {} bytes; a read-your-writes key needs at least {MIN_RYW_KEY_BYTES} (remove the file to have a new one made)",
            path.display(),
            key.len()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            crate::store::write_atomically_with_mode(&path, &key, 0o600)?;
            tracing::info!(path = %path.display(), "made a read-your-writes key and kept it in the state directory");
            Ok(key.to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sy-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let made = ryw_key(&dir).expect("made");
        assert_eq!(made.len(), 32);
        let mode = std::fs::metadata(dir.join(RYW_KEY_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ryw_key(&dir).expect("read back"), made);
        std::fs::write(dir.join(RYW_KEY_FILE), b"short").expect("write");
        let err = ryw_key(&dir).expect_err("too short");
        assert!(err.to_string().contains("needs at least 32"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
