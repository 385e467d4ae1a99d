//! 32-byte key files that only their owner may read: made from the OS's random source with
//! mode 0600 from the moment they exist (never chmod'ed afterwards), synced with their folder,
//! and refused when group or others can read them. Used for a node interface's private key
//! (`dataplane::keys`) and the controller's sealing key (`secretbox`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Open { path: PathBuf, mode: u32 },
    #[error("key file {path} does not hold a 32-byte key; was it replaced?")]
    Bad { path: PathBuf },
}

/// The key in `path`, made (and written durably) the first time.
pub fn load_or_create(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let key: [u8; 32] = rand::random();
            f.write_all(&key).and_then(|()| f.sync_all()).map_err(io)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
            }
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Open {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    std::fs::read(path)
        .map_err(io)?
        .try_into()
        .map_err(|_| KeyFileError::Bad {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_0600_read_back_and_refused_once_opened_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), a);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::Open { .. })
        ));
        std::fs::write(dir.path().join("short"), b"x").unwrap();
        std::fs::set_permissions(
            dir.path().join("short"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(matches!(
            load_or_create(&dir.path().join("short")),
            Err(KeyFileError::Bad { .. })
        ));
    }
}
