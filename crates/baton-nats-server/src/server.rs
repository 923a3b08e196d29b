//! One `nats-server` process.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::time::{Instant, sleep};

use crate::{NatsServerError, binary::find_nats_server};

/// How long a server may take to listen and to have JetStream ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `server_name`; defaults to `baton-<pid>-<n>`.
    pub name: Option<String>,
    /// Keep JetStream data here instead of in a temporary directory (which
    /// is removed on drop).
    pub store_dir: Option<PathBuf>,
    /// Client port; `None` lets the OS pick a free one.
    pub port: Option<u16>,
    /// Also serve the monitoring endpoint (`/healthz`, `/jsz`, ...).
    pub monitoring: bool,
    /// Appended to the generated config (users, permissions, TLS, ...).
    pub extra_config: String,
    /// A config file to `include` (e.g. the users `baton auth` writes);
    /// `nats-server --signal reload` re-reads it.
    pub include: Option<PathBuf>,
    /// The nkey seed and inbox prefix the readiness check connects with,
    /// for a config that requires authentication.
    pub ready_nkey: Option<(String, String)>,
    /// Do not enable JetStream.
    pub no_jetstream: bool,
    /// Cluster membership (set by [`NatsCluster`](crate::NatsCluster)).
    pub cluster: Option<ClusterSettings>,
}

/// A node's place in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The cluster's name (same on every node).
    pub name: String,
    /// This node's route port.
    pub port: u16,
    /// The other nodes' route ports.
    pub routes: Vec<u16>,
}

/// A running (or killed) `nats-server` with its own directory.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    store: PathBuf,
    name: String,
    opts: ServerOptions,
    child: Option<Child>,
    watchdog: Option<Child>,
    port: u16,
    monitor_port: Option<u16>,
}

impl NatsServer {
    /// Starts a single JetStream node on a free port with a temporary store.
    pub async fn start() -> Result<NatsServer, NatsServerError> {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts a server as `opts` describes and waits until it accepts
    /// clients (and, with JetStream, until JetStream answers).
    pub async fn start_with(opts: ServerOptions) -> Result<NatsServer, NatsServerError> {
        let mut server = Self::spawn_with(opts)?;
        server.wait_listening().await?;
        if server.opts.cluster.is_none() && !server.opts.no_jetstream {
            server.wait_jetstream().await?;
        }
        Ok(server)
    }

    /// Starts the process without waiting for it (the cluster waits for all
    /// nodes together).
    pub(crate) fn spawn_with(opts: ServerOptions) -> Result<NatsServer, NatsServerError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let binary = find_nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("baton-nats-")
            .tempdir()
            .map_err(|e| NatsServerError::io("creating a temporary directory", e))?;
        let store = opts
            .store_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("store"));
        let name = opts.name.clone().unwrap_or_else(|| {
            format!(
                "baton-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut server = NatsServer {
            binary,
            dir,
            store,
            name,
            port: opts.port.unwrap_or(0),
            monitor_port: None,
            opts,
            child: None,
            watchdog: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn config(&self) -> String {
        let mut c = String::new();
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let _ = writeln!(c, "server_name: {:?}", self.name);
        let _ = writeln!(c, "listen: \"127.0.0.1:{port}\"");
        if self.opts.monitoring {
            let mport = self
                .monitor_port
                .map_or_else(|| "-1".to_string(), |p| p.to_string());
            let _ = writeln!(c, "http: \"127.0.0.1:{mport}\"");
        }
        if !self.opts.no_jetstream {
            let _ = writeln!(
                c,
                "jetstream {{ store_dir: {:?} }}",
                self.store.display().to_string()
            );
        }
        if let Some(cluster) = &self.opts.cluster {
            let routes = cluster
                .routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect::<Vec<_>>()
                .join(", ");
            // Routes ping every second and give up after 3 missed pongs: a
            // node that is frozen (SIGSTOP, a paused VM) keeps its TCP
            // connections open, and with the default 2-minute ping the
            // others kept buffering for it; in tests/ha.rs the rest of the
            // cluster then sometimes served nothing for over a minute.
            let _ = writeln!(
                c,
                "cluster {{ name: {:?}, listen: \"127.0.0.1:{}\", routes: [{routes}], ping_interval: \"1s\", ping_max: 3 }}",
                cluster.name, cluster.port
            );
        }
        if let Some(file) = &self.opts.include {
            // nats-server resolves an include relative to the including
            // file's directory, even when given an absolute path.
            let ups = self.dir.path().components().count().saturating_sub(1);
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            let rel = file.strip_prefix("/").unwrap_or(&file);
            let _ = writeln!(
                c,
                "include {:?}",
                format!("{}{}", "../".repeat(ups), rel.display())
            );
        }
        c.push_str(&self.opts.extra_config);
        c.push('\n');
        c
    }

    fn ports_dir(&self) -> PathBuf {
        self.dir.path().join("ports")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn spawn(&mut self) -> Result<(), NatsServerError> {
        let config_path = self.dir.path().join("server.conf");
        fs::write(&config_path, self.config())
            .map_err(|e| NatsServerError::io("writing server.conf", e))?;
        let ports = self.ports_dir();
        let _ = fs::remove_dir_all(&ports);
        fs::create_dir_all(&ports).map_err(|e| NatsServerError::io("creating ports dir", e))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config_path)
            .arg("--ports_file_dir")
            .arg(&ports)
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NatsServerError::io(format!("starting {}", self.binary.display()), e))?;
        // Kills the server if our process dies without dropping us.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null && kill -0 \"$2\" 2>/dev/null; do sleep 1; done; \
                 kill -9 \"$2\" 2>/dev/null",
            )
            .arg("baton-nats-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        self.child = Some(child);
        self.watchdog = watchdog;
        Ok(())
    }

    pub(crate) async fn wait_listening(&mut self) -> Result<(), NatsServerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(ports) = self.read_ports_file() {
                self.port = ports.0;
                self.monitor_port = ports.1.or(self.monitor_port);
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(self.not_ready(format!("nats-server exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(self.not_ready("no ports file after 30s".into()));
            }
            sleep(POLL).await;
        }
    }

    fn read_ports_file(&self) -> Option<(u16, Option<u16>)> {
        let entry = fs::read_dir(self.ports_dir()).ok()?.flatten().next()?;
        let text = fs::read_to_string(entry.path()).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let port_of = |key: &str| -> Option<u16> {
            let url = json.get(key)?.as_array()?.first()?.as_str()?;
            url.rsplit(':').next()?.parse().ok()
        };
        Some((port_of("nats")?, port_of("monitoring")))
    }

    /// Waits until this node's JetStream answers account requests.
    pub(crate) async fn wait_jetstream(&self) -> Result<(), NatsServerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("not connected");
        while Instant::now() < deadline {
            let options = match &self.opts.ready_nkey {
                Some((seed, inbox)) => async_nats::ConnectOptions::with_nkey(seed.clone())
                    .custom_inbox_prefix(inbox.clone()),
                None => async_nats::ConnectOptions::new(),
            };
            match options
                .connection_timeout(Duration::from_secs(2))
                .connect(self.url())
                .await
            {
                Ok(client) => {
                    let js = async_nats::jetstream::new(client);
                    while Instant::now() < deadline {
                        match js.query_account().await {
                            Ok(_) => return Ok(()),
                            Err(e) => last = e.to_string(),
                        }
                        sleep(POLL * 5).await;
                    }
                }
                Err(e) => last = e.to_string(),
            }
            sleep(POLL * 5).await;
        }
        Err(self.not_ready(format!("JetStream not ready after 30s: {last}")))
    }

    fn not_ready(&self, reason: String) -> NatsServerError {
        NatsServerError::NotReady {
            reason,
            log: self.log_tail(40),
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` of the monitoring endpoint, if enabled.
    pub fn monitor_url(&self) -> Option<String> {
        self.monitor_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The `server_name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where JetStream keeps its data.
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the server with SIGKILL (a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Asks the server to enter lame-duck mode (moves leaders away, then
    /// exits).
    pub fn lame_duck(&self) -> Result<(), NatsServerError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("ldm={pid}"))
            .status()
            .map_err(|e| NatsServerError::io("signalling lame-duck mode", e))?;
        Ok(())
    }

    /// Starts the server again on the same port with the same store (after
    /// [`kill`](Self::kill)).
    pub async fn restart(&mut self) -> Result<(), NatsServerError> {
        self.kill();
        self.spawn()?;
        self.wait_listening().await?;
        if self.opts.cluster.is_none() && !self.opts.no_jetstream {
            self.wait_jetstream().await?;
        }
        Ok(())
    }

    /// Stops the server (also done on drop).
    pub fn stop(&mut self) {
        self.kill();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
