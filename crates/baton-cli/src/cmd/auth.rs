//! `baton auth`: provisions NATS identities the server enforces (nkeys, one
//! user per identity) and the server configuration that grants each role
//! its subjects. The directory is the record: every identity file in it is
//! a user in the generated configuration, so adding one is running the
//! command again with the new name, then reloading the server.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use baton_core::AgentId;
use baton_jetstream::auth::{IdentityFile, Role, User, inbox_prefix, server_config};
use clap::Args;

/// The generated server configuration's file name.
pub const CONFIG_FILE: &str = "auth.conf";
/// Identity files end with this.
pub const IDENTITY_EXT: &str = "nk";

/// `baton auth --help`.
pub const LONG_ABOUT: &str = "\
Provision NATS identities for Baton and the nats-server configuration that enforces them.

Each identity gets an nkey: DIR/<name>.nk holds its seed (keep it secret) and is what a \
client connects with (`baton --nkey DIR/<name>.nk ...`, the Rust SDK's \
`NatsOptions::nkey_seed_file`, the Python client's `nkey_seed=`); its `# inbox:` line makes \
the client use its own inbox prefix `_INBOX_<name>`. DIR/auth.conf holds one user per \
identity file in DIR with its role's permissions; include it in the server configuration \
(`include \"auth.conf\"`, relative to the including file).

Roles:
  agent     publishes only its own events (baton.evt.*.<id>) and decisions (baton.ctx.*.<id>);
            reads events, decision records, KV baton-tasks and baton-policy; queries baton.api.v1.>
  operator  an agent that also writes KV baton-silences and reads alerts and BATON_DLQ
  service   the orchestrator and stall detector: streams, consumers, KV writes, alerts, DLQ, $SRV
  viewer    read-only: streams, KV, alerts, the query API; publishes nothing

Running it again keeps existing identities and their keys and adds the new ones. To add an \
agent to a running server: `baton auth --dir DIR --agent NEW`, then \
`nats-server --signal reload=<pid>`. To remove one, delete DIR/<name>.nk, run `baton auth --dir DIR`, \
and reload.";

/// `baton auth` flags.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Directory for identity files and auth.conf (created if missing)
    #[arg(long, env = "BATON_AUTH_DIR", value_name = "DIR")]
    pub dir: PathBuf,
    /// Agent identities to add (repeat or comma-separate)
    #[arg(
        long = "agent",
        env = "BATON_AUTH_AGENTS",
        value_name = "ID",
        value_delimiter = ','
    )]
    pub agents: Vec<String>,
    /// Operator identities to add: agents that may also manage silences and read dead letters
    #[arg(
        long = "operator",
        env = "BATON_AUTH_OPERATORS",
        value_name = "ID",
        value_delimiter = ','
    )]
    pub operators: Vec<String>,
    /// Service identities to add (the orchestrator and the stall detector)
    #[arg(
        long = "service",
        env = "BATON_AUTH_SERVICES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub services: Vec<String>,
    /// Read-only identities to add (CLI read commands, dashboards)
    #[arg(
        long = "viewer",
        env = "BATON_AUTH_VIEWERS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub viewers: Vec<String>,
}

/// One identity on disk.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    pub file: PathBuf,
    pub seed: String,
    /// Created by this run (not there before).
    pub new: bool,
}

/// What a provisioning run left in the directory.
#[derive(Debug)]
pub struct Provisioned {
    pub config: PathBuf,
    pub identities: Vec<Identity>,
}

impl Provisioned {
    /// The identity called `name`.
    pub fn get(&self, name: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.name == name)
    }
}

/// `baton auth`.
pub fn auth(args: &AuthArgs) -> anyhow::Result<()> {
    let mut wanted = Vec::new();
    for (role, names) in [
        (Role::Agent, &args.agents),
        (Role::Operator, &args.operators),
        (Role::Service, &args.services),
        (Role::Viewer, &args.viewers),
    ] {
        wanted.extend(names.iter().map(|n| (role, n.trim().to_string())));
    }
    if wanted.is_empty() && !args.dir.is_dir() {
        bail!(
            "{} does not exist: provision identities with --agent, --operator, --service or --viewer",
            args.dir.display()
        );
    }
    let done = provision(&args.dir, &wanted)?;
    if done.identities.is_empty() {
        bail!(
            "no identities in {}: add some with --agent, --operator, --service or --viewer",
            args.dir.display()
        );
    }
    println!("Identities in {}:", args.dir.display());
    for i in &done.identities {
        println!(
            "  {:<9} {:<24} {}{}",
            i.role.as_str(),
            i.name,
            i.file.display(),
            if i.new { "  (new)" } else { "" }
        );
    }
    println!(
        "\nServer configuration: {}\n\
         Include it in the nats-server config (`include \"{CONFIG_FILE}\"`, a path relative to the\n\
         including file), then start the server or reload it: nats-server --signal reload=<pid>\n\
         Connect as an identity with: baton --nkey {}/<name>.{IDENTITY_EXT} ...",
        done.config.display(),
        args.dir.display()
    );
    Ok(())
}

/// Adds `wanted` identities to `dir` (keeping every one already there with
/// its key) and writes `dir/auth.conf` for all of them.
pub fn provision(dir: &Path, wanted: &[(Role, String)]) -> anyhow::Result<Provisioned> {
    create_private_dir(dir)?;
    let mut created = Vec::new();
    for (role, name) in wanted {
        AgentId::new(name).map_err(|e| anyhow::anyhow!("identity name {name:?}: {e}"))?;
        let file = dir.join(format!("{name}.{IDENTITY_EXT}"));
        if file.exists() {
            let existing = read_identity(&file)?;
            if existing.role != *role {
                bail!(
                    "identity {name} already exists as {} in {}; delete it first to provision it as {role}",
                    existing.role,
                    file.display()
                );
            }
            continue;
        }
        let key = nkeys::KeyPair::new_user();
        let seed = key
            .seed()
            .map_err(|e| anyhow::anyhow!("cannot encode a new nkey seed: {e}"))?;
        let text = IdentityFile {
            name: Some(name.clone()),
            role: Some(*role),
            inbox: Some(inbox_prefix(name)),
            seed,
        }
        .render();
        write_private(&file, text.as_bytes(), true)?;
        created.push(name.clone());
    }
    let mut identities = Vec::new();
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) == Some(IDENTITY_EXT) {
            let mut identity = read_identity(&path)?;
            identity.new = created.contains(&identity.name);
            identities.push(identity);
        }
    }
    identities.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    let mut users = Vec::new();
    for i in &identities {
        let key = nkeys::KeyPair::from_seed(&i.seed)
            .map_err(|e| anyhow::anyhow!("{}: invalid nkey seed: {e}", i.file.display()))?;
        users.push(User {
            name: i.name.clone(),
            role: i.role,
            public_key: key.public_key(),
        });
    }
    let config = dir.join(CONFIG_FILE);
    let tmp = dir.join(format!(".{CONFIG_FILE}.tmp"));
    write_private(&tmp, server_config(&users).as_bytes(), false)?;
    fs::rename(&tmp, &config).with_context(|| format!("cannot write {}", config.display()))?;
    Ok(Provisioned { config, identities })
}

/// Reads and checks one identity file; its name is the file's stem.
fn read_identity(path: &Path) -> anyhow::Result<Identity> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = IdentityFile::parse(&text).with_context(|| format!("{}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    AgentId::new(&stem).map_err(|e| anyhow::anyhow!("{}: file name: {e}", path.display()))?;
    if file.name.as_deref().is_some_and(|n| n != stem) {
        bail!(
            "{}: names identity {:?}, but the file is called {stem:?}",
            path.display(),
            file.name.unwrap_or_default()
        );
    }
    let Some(role) = file.role else {
        bail!(
            "{}: no `# role:` line (agent, operator, service or viewer)",
            path.display()
        );
    };
    Ok(Identity {
        name: stem,
        role,
        file: path.to_path_buf(),
        seed: file.seed,
        new: false,
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a file only its owner can read; `create_new` refuses to replace
/// an existing one.
fn write_private(path: &Path, bytes: &[u8], create_new: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `baton dev --auth`: the server enforces identities.
#[derive(Debug, Clone, Args)]
pub struct DevAuthArgs {
    /// Enforce identities: provision them (as `baton auth` does) in <data>/auth, run nats-server with them and the services as the service identity
    #[arg(long = "auth", env = "BATON_DEV_AUTH")]
    pub enabled: bool,
    /// With --auth: agent identities to provision (a service `baton`, an operator `operator` and a viewer `viewer` are always made)
    #[arg(
        long = "auth-agent",
        env = "BATON_DEV_AUTH_AGENTS",
        value_name = "ID",
        value_delimiter = ',',
        default_value = "agent-1"
    )]
    pub agents: Vec<String>,
}

/// The identities of a `baton dev --auth` run.
#[derive(Debug)]
pub struct DevAuth {
    pub provisioned: Provisioned,
    /// Holds the identities when `baton dev` keeps no data.
    _temp: Option<tempfile::TempDir>,
}

/// The service identity `baton dev --auth` runs the services as.
const DEV_SERVICE: &str = "baton";

impl DevAuth {
    /// Provisions the dev identities in `<data>/auth` (or a temporary
    /// directory), keeping those already there; `None` without `--auth`.
    pub fn setup(
        args: &DevAuthArgs,
        nats: &crate::args::NatsArgs,
        data: Option<&Path>,
    ) -> anyhow::Result<Option<DevAuth>> {
        if !args.enabled {
            return Ok(None);
        }
        if nats.url.is_some() {
            bail!("--auth starts its own nats-server: it cannot be used with --nats");
        }
        let (dir, temp) = match data {
            Some(d) => (d.join("auth"), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("baton-dev-auth-")
                    .tempdir()
                    .context("cannot create a temporary directory for the identities")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut wanted = vec![
            (Role::Service, DEV_SERVICE.to_string()),
            (Role::Operator, "operator".to_string()),
            (Role::Viewer, "viewer".to_string()),
        ];
        wanted.extend(
            args.agents
                .iter()
                .map(|a| (Role::Agent, a.trim().to_string())),
        );
        let wanted: Vec<_> = wanted
            .into_iter()
            .filter(|(_, n)| !dir.join(format!("{n}.{IDENTITY_EXT}")).exists())
            .collect();
        let provisioned = provision(&dir, &wanted)?;
        match provisioned.get(DEV_SERVICE) {
            Some(i) if i.role == Role::Service => {}
            _ => bail!(
                "{} is not a service identity: remove it so `baton dev --auth` can provision one",
                dir.join(format!("{DEV_SERVICE}.{IDENTITY_EXT}")).display()
            ),
        }
        Ok(Some(DevAuth {
            provisioned,
            _temp: temp,
        }))
    }

    /// The identity the services run as.
    pub fn service(&self) -> &Identity {
        self.provisioned
            .get(DEV_SERVICE)
            .unwrap_or_else(|| unreachable!("checked in setup"))
    }

    /// Seed and inbox prefix for the server's readiness check.
    pub fn ready_nkey(&self) -> (String, String) {
        let s = self.service();
        (s.seed.clone(), inbox_prefix(&s.name))
    }

    /// Tells where the identity files are and how to add one.
    pub fn print(&self, server_pid: Option<u32>) {
        eprintln!(
            "Identities are enforced (server config {}); connect as one with --nkey FILE:",
            self.provisioned.config.display()
        );
        for i in &self.provisioned.identities {
            eprintln!(
                "  {:<9} {:<16} {}",
                i.role.as_str(),
                i.name,
                i.file.display()
            );
        }
        eprintln!(
            "Add an agent: baton auth --dir {} --agent NAME, then nats-server --signal reload={}\n",
            self.provisioned
                .config
                .parent()
                .map_or_else(String::new, |d| d.display().to_string()),
            server_pid.unwrap_or_default(),
        );
    }
}
