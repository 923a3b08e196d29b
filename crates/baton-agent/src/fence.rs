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
        self.admitted(name, token, Some(bytes))
    }

    /// Records `token` for `name` without writing data: a holder of a
    /// folder (`drafts`) registers its token, so a stale holder of a file
    /// under it (`drafts/post.md`) is refused from now on.
    pub fn fence(&self, name: &ArtifactName, token: u64) -> Result<(), FencedWriteError> {
        self.admitted(name, token, None)
    }

    /// Under the lock: admits the token, then (data aside first, the token
    /// recorded, the data put in place) so that a crash can lose the write
    /// but never let an older token in afterwards.
    fn admitted(
        &self,
        name: &ArtifactName,
        token: u64,
        bytes: Option<&[u8]>,
    ) -> Result<(), FencedWriteError> {
        let io = |source| FencedWriteError::Io {
            dir: self.dir.clone(),
            source,
        };
        if name.root().starts_with(TOKENS_FILE) {
            return Err(io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: names starting with {TOKENS_FILE} are the store's own"),
            )));
        }
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
        let staged = match bytes {
            Some(bytes) => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io)?;
                }
                Some(stage(&path, bytes).map_err(io)?)
            }
            None => None,
        };
        let mut tokens = String::new();
        for (artifact, token) in fence.last_seen() {
            tokens.push_str(&format!("{token}\t{artifact}\n"));
        }
        let tokens_path = self.dir.join(TOKENS_FILE);
        fs::rename(
            stage(&tokens_path, tokens.as_bytes()).map_err(io)?,
            &tokens_path,
        )
        .map_err(io)?;
        if let Some(staged) = staged {
            fs::rename(staged, &path).map_err(io)?;
        }
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

/// Writes `bytes` beside `path` (synced), for a rename into place: a file
/// is replaced whole or not at all.
fn stage(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let tmp = path.with_extension(format!("baton-tmp-{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(tmp)
}
