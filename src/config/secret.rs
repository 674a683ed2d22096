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
/// The file is created with `create_new`, so two processes starting at once agree on one value: the loser
/// of the race reads what the winner wrote.
pub fn load_or_generate(dir: &Path, name: &str) -> std::io::Result<StoredSecret> {
    let path = dir.join(name);
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(mut file) => {
            file.write_all(fresh.as_bytes())?;
            file.sync_all()?;
            Ok(StoredSecret { secret: Secret::new(fresh), path, created: true })
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let value = std::fs::read_to_string(&path)?.trim().to_owned();
            if value.is_empty() {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{} is empty; delete it to have a new secret generated", path.display()),
                ));
            }
            Ok(StoredSecret { secret: Secret::new(value), path, created: false })
        }
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
