//! Topics: status streams with lifecycles, state and history, over REST, `/ws`, topic sockets and the
//! order-streaming design's own URLs.

mod publish;
pub(crate) mod redis;
mod streams;

use std::path::Path;

use crate::helpers::{Settings, TestApp};

/// Starts a server with `toml` as its config file (kept in `dir`).
pub async fn spawn_with_config(dir: &Path, toml: &str) -> TestApp {
    let path = dir.join("herald.toml");
    std::fs::write(&path, toml).expect("write the config file");
    TestApp::spawn_with(|s: &mut Settings| {
        s.arg("--config").arg(path.display().to_string());
    })
    .await
}
