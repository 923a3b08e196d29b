//! Identities the server enforces: what each role may publish and
//! subscribe to, the `nats-server` configuration that says so, and the
//! identity file a client connects with.
//!
//! Every subject an actor writes ends with its id (design decision 6), so a
//! per-user publish allow list such as `baton.evt.*.<agent>` binds an agent
//! to its id. Replies (publish acks, JetStream API answers, query replies)
//! go to the client's own inbox prefix `_INBOX_<id>`, the only inbox it may
//! subscribe to, so no client reads another's replies.
//!
//! This module is pure: it renders text. `baton auth` generates the keys
//! and writes the files.

use std::fmt::Write as _;

use baton_core::subjects;

/// What an identity is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Publishes only its own events and decisions; reads tasks, events,
    /// decision records and the policy; queries the orchestrator.
    Agent,
    /// An agent that may also manage silences and read dead letters.
    Operator,
    /// The orchestrator and the stall detector: manages streams and
    /// consumers, writes KV, alerts and dead letters, serves the query API.
    Service,
    /// Read-only: streams, KV, alerts, the query API.
    Viewer,
}

impl Role {
    /// Lower-case name, as written in identity files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Service => "service",
            Role::Viewer => "viewer",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "agent" => Role::Agent,
            "operator" => Role::Operator,
            "service" => Role::Service,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// KV bucket holding the orchestrator's published policy (key `policy`).
pub const POLICY_BUCKET: &str = "baton-policy";

/// The inbox prefix of identity `name`: `_INBOX_<name>`.
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX_{name}")
}

/// Publish and subscribe rules of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    /// Lets the identity answer requests it received (the service's query
    /// API replies to the requester's inbox).
    pub allow_responses: bool,
}

fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// JetStream API subjects that read `stream`: info, direct and plain gets,
/// and ephemeral (ordered) consumers to read a range.
///
/// On `BATON_EVENTS` a consumer must be created by the subject that names
/// it (`$JS.API.CONSUMER.CREATE.<stream>.<name>...`, as Baton's readers do):
/// the nameless `$JS.API.CONSUMER.CREATE.<stream>` takes the name from the
/// request body, where no permission can see it, and would let a reader
/// rewrite the services' durable consumers.
fn read_stream(stream: &str, out: &mut Vec<String>) {
    if stream != subjects::EVENTS_STREAM {
        out.push(format!("$JS.API.CONSUMER.CREATE.{stream}"));
    }
    for s in [
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
    ] {
        out.push(s);
    }
}

/// The services' durable consumers: readers may create ephemeral consumers
/// on the same streams, but never touch these.
fn protect_service_consumers(out: &mut Vec<String>) {
    for durable in [subjects::ORCHESTRATOR_CONSUMER, subjects::DETECTOR_CONSUMER] {
        let stream = subjects::EVENTS_STREAM;
        for s in [
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.>"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.{durable}"),
        ] {
            out.push(s);
        }
    }
}

/// What identity `name` with `role` may do.
pub fn permissions(role: Role, name: &str) -> Permissions {
    let inbox = format!("{}.>", inbox_prefix(name));
    let mut publish_allow = Vec::new();
    let mut publish_deny = Vec::new();
    let mut subscribe_allow = vec![inbox];
    match role {
        Role::Agent | Role::Operator => {
            publish_allow.push(format!("baton.evt.*.{name}"));
            publish_allow.push(format!("baton.ctx.*.{name}"));
            publish_allow.push(format!("baton.art.*.{name}.>"));
            publish_allow.push(format!("{}.>", subjects::API_PREFIX));
            publish_allow.push("$JS.API.INFO".into());
            publish_allow.push("$JS.API.STREAM.NAMES".into());
            let mut streams = vec![
                subjects::EVENTS_STREAM.to_string(),
                subjects::CONTEXT_STREAM.to_string(),
                subjects::ARTIFACTS_STREAM.to_string(),
                kv_stream(subjects::TASKS_BUCKET),
                kv_stream(subjects::LEASES_BUCKET),
                // Where the leases bucket is complete up to (sequences only).
                kv_stream(subjects::CHECKPOINTS_BUCKET),
                kv_stream(POLICY_BUCKET),
            ];
            if role == Role::Operator {
                publish_allow.push(format!("$KV.{}.>", subjects::SILENCES_BUCKET));
                streams.push(kv_stream(subjects::SILENCES_BUCKET));
                streams.push(subjects::DLQ_STREAM.to_string());
                streams.push(subjects::ALERTS_STREAM.to_string());
            }
            for s in &streams {
                read_stream(s, &mut publish_allow);
            }
            protect_service_consumers(&mut publish_deny);
            subscribe_allow.push(subjects::ALERTS_ALL.into());
        }
        Role::Viewer => {
            publish_allow.push(format!("{}.>", subjects::API_PREFIX));
            publish_allow.push("$SRV.>".into());
            publish_allow.push("$JS.API.INFO".into());
            publish_allow.push("$JS.API.STREAM.NAMES".into());
            publish_allow.push("$JS.API.STREAM.LIST".into());
            publish_allow.push("$JS.API.CONSUMER.NAMES.*".into());
            publish_allow.push("$JS.API.CONSUMER.LIST.*".into());
            for s in [
                subjects::EVENTS_STREAM.to_string(),
                subjects::CONTEXT_STREAM.to_string(),
                subjects::ARTIFACTS_STREAM.to_string(),
                subjects::ALERTS_STREAM.to_string(),
                subjects::DLQ_STREAM.to_string(),
                kv_stream(subjects::TASKS_BUCKET),
                kv_stream(subjects::LEASES_BUCKET),
                kv_stream(subjects::SERVICES_BUCKET),
                kv_stream(subjects::SILENCES_BUCKET),
                kv_stream(subjects::CHECKPOINTS_BUCKET),
                kv_stream(subjects::DETECTOR_BUCKET),
                kv_stream(POLICY_BUCKET),
                kv_stream(subjects::LEADERS_BUCKET),
            ] {
                read_stream(&s, &mut publish_allow);
            }
            // Watching a KV bucket answers the server's flow control.
            publish_allow.push("$JS.FC.>".into());
            protect_service_consumers(&mut publish_deny);
            subscribe_allow.push(subjects::ALERTS_ALL.into());
        }
        Role::Service => {
            // Everything Baton's own services do: every `baton.` subject
            // (alerts, dead letters, the demo's agents), the whole
            // JetStream API (streams, consumers, acks, flow control), KV
            // writes, and the service framework.
            for s in ["baton.>", "$JS.>", "$KV.>", "$SRV.>"] {
                publish_allow.push(s.into());
            }
            for s in ["baton.>", "$SRV.>", "$JS.EVENT.>"] {
                subscribe_allow.push(s.into());
            }
        }
    }
    Permissions {
        publish_allow,
        publish_deny,
        subscribe_allow,
        allow_responses: role == Role::Service,
    }
}

/// One provisioned identity, as the server configuration needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The nkey's public key (`U...`).
    pub public_key: String,
}

/// A list, one subject per line, indented to `indent`.
fn list(items: &[String], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::from("[\n");
    for s in items {
        let _ = writeln!(out, "{pad}  {s:?}");
    }
    out.push_str(&pad);
    out.push(']');
    out
}

/// The `authorization { users: [...] }` block for `users`, to include in a
/// nats-server configuration (`include "auth.conf"`).
pub fn server_config(users: &[User]) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Generated by `baton auth`: one user per Baton identity. Do not edit;\n\
         # run `baton auth` again, then `nats-server --signal reload=<pid>`."
    );
    let _ = writeln!(c, "authorization {{\n  users: [");
    for u in users {
        let p = permissions(u.role, &u.name);
        let _ = writeln!(c, "    # {} {}", u.role, u.name);
        let _ = writeln!(c, "    {{");
        let _ = writeln!(c, "      nkey: {:?}", u.public_key);
        let _ = writeln!(c, "      permissions: {{");
        let _ = writeln!(c, "        publish: {{");
        let _ = writeln!(c, "          allow: {}", list(&p.publish_allow, 10));
        if !p.publish_deny.is_empty() {
            let _ = writeln!(c, "          deny: {}", list(&p.publish_deny, 10));
        }
        let _ = writeln!(c, "        }}");
        let _ = writeln!(
            c,
            "        subscribe: {{ allow: {} }}",
            list(&p.subscribe_allow, 8)
        );
        if p.allow_responses {
            let _ = writeln!(c, "        allow_responses: true");
        }
        let _ = writeln!(c, "      }}");
        let _ = writeln!(c, "    }}");
    }
    let _ = writeln!(c, "  ]\n}}");
    c
}

/// An identity file: a few `# key: value` lines, then the nkey seed.
/// Clients that only want the seed take the first line starting with `SU`
/// (as the NATS tools do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFile {
    pub name: Option<String>,
    pub role: Option<Role>,
    /// The inbox prefix the identity may subscribe to.
    pub inbox: Option<String>,
    pub seed: String,
}

/// Why an identity file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    #[error("no nkey seed (a line starting with SU) in the file")]
    NoSeed,
    #[error("unknown role {0:?} (expected agent, operator, service or viewer)")]
    UnknownRole(String),
}

impl IdentityFile {
    /// Renders the file.
    pub fn render(&self) -> String {
        let mut c = String::from(
            "# Baton identity, generated by `baton auth`. Keep this file secret.\n\
             # Connect with: baton --nkey <this file> ...\n",
        );
        if let Some(name) = &self.name {
            let _ = writeln!(c, "# name: {name}");
        }
        if let Some(role) = self.role {
            let _ = writeln!(c, "# role: {role}");
        }
        if let Some(inbox) = &self.inbox {
            let _ = writeln!(c, "# inbox: {inbox}");
        }
        let _ = writeln!(c, "{}", self.seed);
        c
    }

    /// Parses a file: `# name:`, `# role:` and `# inbox:` lines are
    /// optional (a bare seed is a valid file).
    pub fn parse(text: &str) -> Result<IdentityFile, IdentityFileError> {
        let mut file = IdentityFile {
            name: None,
            role: None,
            inbox: None,
            seed: String::new(),
        };
        for line in text.lines().map(str::trim) {
            if let Some(comment) = line.strip_prefix('#') {
                let Some((key, value)) = comment.split_once(':') else {
                    continue;
                };
                let value = value.trim().to_string();
                match key.trim() {
                    "name" => file.name = Some(value),
                    "inbox" => file.inbox = Some(value),
                    "role" => {
                        file.role =
                            Some(Role::parse(&value).ok_or(IdentityFileError::UnknownRole(value))?);
                    }
                    _ => {}
                }
            } else if line.starts_with("SU") && file.seed.is_empty() {
                file.seed = line.to_string();
            }
        }
        if file.seed.is_empty() {
            return Err(IdentityFileError::NoSeed);
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trips_and_a_bare_seed_parses() {
        let f = IdentityFile {
            name: Some("alice".into()),
            role: Some(Role::Agent),
            inbox: Some("_INBOX_alice".into()),
            seed: "SUAEXAMPLE".into(),
        };
        assert_eq!(IdentityFile::parse(&f.render()).unwrap(), f);
        let bare = IdentityFile::parse("SUAONLY\n").unwrap();
        assert_eq!(bare.seed, "SUAONLY");
        assert_eq!(bare.inbox, None);
        assert!(matches!(
            IdentityFile::parse("# name: x\n"),
            Err(IdentityFileError::NoSeed)
        ));
    }

    #[test]
    fn an_agent_publishes_only_under_its_own_id() {
        let p = permissions(Role::Agent, "alice");
        assert!(p.publish_allow.contains(&"baton.evt.*.alice".to_string()));
        assert!(p.publish_allow.contains(&"baton.ctx.*.alice".to_string()));
        assert!(p.publish_allow.contains(&"baton.art.*.alice.>".to_string()));
        assert!(!p.publish_allow.iter().any(|s| s.starts_with("$KV.")));
        assert!(
            !p.publish_allow
                .iter()
                .any(|s| s.contains("DELETE.BATON") && !s.contains("CONSUMER"))
        );
        assert_eq!(p.subscribe_allow[0], "_INBOX_alice.>");
        // Nameless consumer creation would hide the name from the server's
        // permission check.
        assert!(
            !p.publish_allow
                .contains(&"$JS.API.CONSUMER.CREATE.BATON_EVENTS".to_string())
        );
        assert!(!p.allow_responses);
    }
}
