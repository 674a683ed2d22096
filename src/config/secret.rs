//! Secrets: values that must never reach a log line, and the generated defaults kept under the data dir.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// A string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call sites are few and easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where a generated secret lives, and whether this start created it.
#[derive(Debug)]
pub struct StoredSecret {
    pub secret: Secret,
    pub path: PathBuf,
    pub created: bool,
}

/// Reads the secret in `dir/name`, or creates it with 32 random bytes (hex) and file mode 0600.
///
/// The new value is written and synced to a private temporary file first, then hard-linked into place, which
/// fails if the name exists: so the file is never seen half-written, and two processes starting at once agree
/// on one value (the loser reads what the winner linked).
pub fn load_or_generate(dir: &Path, name: &str) -> std::io::Result<StoredSecret> {
    let path = dir.join(name);
    if let Some(existing) = read_existing(&path)? {
        return Ok(StoredSecret { secret: existing, path, created: false });
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let staging = dir.join(format!(".{name}.{}.{:016x}", std::process::id(), rand::rng().next_u64()));
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staging)?;
    file.write_all(fresh.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&staging, &path);
    std::fs::remove_file(&staging)?;
    match linked {
        Ok(()) => Ok(StoredSecret { secret: Secret::new(fresh), path, created: true }),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match read_existing(&path)? {
            Some(existing) => Ok(StoredSecret { secret: existing, path, created: false }),
            None => Err(std::io::Error::new(ErrorKind::InvalidData, format!("{} is empty", path.display()))),
        },
        Err(e) => Err(e),
    }
}

fn read_existing(path: &PathBuf) -> std::io::Result<Option<Secret>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("{} is empty; delete it to have a new secret generated", path.display()),
        )),
        Ok(text) => Ok(Some(Secret::new(text.trim()))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path(), "jwt_secret").unwrap();
        assert!(first.created);
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_generate(dir.path(), "jwt_secret").unwrap();
        assert!(!second.created);
        assert_eq!(first.secret, second.secret);
    }
}
