//! A file store that checks fencing tokens: the storage side of leases.
//!
//! A lease alone cannot stop a holder that was paused past its ttl (a GC
//! pause, a laptop lid, a stuck tool call) from writing when it wakes: by
//! then another agent holds the lease. So every write carries the writer's
//! token ([`crate::Lease::token`]) and the store applies one rule
//! ([`baton_core::lease::Fence`]): refuse a write whose token is lower than
//! the last one it saw for that artifact or any name above it. Tokens only
//! grow, so the late write is refused however late it arrives.
//!
//! [`FencedDir`] applies the rule to a directory of files: artifact
//! `drafts/post.md` is the file `<dir>/drafts/post.md`, and the tokens seen
//! are kept beside the data in `<dir>/.baton-fence`, updated under an
//! exclusive file lock, so several processes can share one directory. It is
//! blocking I/O: from async code call it in `spawn_blocking`.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use baton_core::lease::{ArtifactName, Fence, StaleToken};

/// Why a fenced write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FencedWriteError {
    /// The token is older than one the store has seen: the writer's lease
    /// is gone.
    #[error(transparent)]
    Stale(#[from] StaleToken),
    #[error("fenced store {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A directory whose writes are fenced by lease tokens.
#[derive(Debug, Clone)]
pub struct FencedDir {
    dir: PathBuf,
}

const TOKENS_FILE: &str = ".baton-fence";
const LOCK_FILE: &str = ".baton-fence.lock";

impl FencedDir {
    pub fn new(dir: impl Into<PathBuf>) -> FencedDir {
        FencedDir { dir: dir.into() }
    }

    /// Where artifact `name` is stored.
    pub fn path_of(&self, name: &ArtifactName) -> PathBuf {
        name.segments().fold(self.dir.clone(), |p, s| p.join(s))
    }

    /// Writes `bytes` as artifact `name` if `token` is not older than any
    /// token seen for it (or a name above it); the data and the token are
    /// both in place when this returns Ok.
    pub fn write(
        &self,
        name: &ArtifactName,
        token: u64,
        bytes: &[u8],
    ) -> Result<(), FencedWriteError> {
        let io = |source| FencedWriteError::Io {
            dir: self.dir.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))
            .map_err(io)?;
        lock.lock().map_err(io)?;
        let mut fence = self.load().map_err(io)?;
        fence.admit(name, token)?;
        let path = self.path_of(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        replace(&path, bytes).map_err(io)?;
        let mut tokens = String::new();
        for (artifact, token) in fence.last_seen() {
            tokens.push_str(&format!("{token}\t{artifact}\n"));
        }
        replace(&self.dir.join(TOKENS_FILE), tokens.as_bytes()).map_err(io)?;
        drop(lock);
        Ok(())
    }

    /// Reads artifact `name` (no token needed to read).
    pub fn read(&self, name: &ArtifactName) -> io::Result<Vec<u8>> {
        fs::read(self.path_of(name))
    }

    /// The highest token seen for `name` or a name above it.
    pub fn last_token(&self, name: &ArtifactName) -> io::Result<u64> {
        Ok(self.load()?.highest_covering(name))
    }

    fn load(&self) -> io::Result<Fence> {
        let mut fence = Fence::new();
        let text = match fs::read_to_string(self.dir.join(TOKENS_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            let Some((token, artifact)) = line.split_once('\t') else {
                continue;
            };
            let token = token.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad token line {line:?}"),
                )
            })?;
            fence.remember(artifact, token);
        }
        Ok(fence)
    }
}

/// Writes a file whole or not at all (a temporary file, synced, renamed).
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("baton-tmp-{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
