//! A JetStream cluster of `nats-server` processes on loopback.

use std::{net::TcpListener, path::PathBuf};

use crate::{
    NatsServerError,
    server::{ClusterSettings, NatsServer, ServerOptions},
};

/// A cluster of JetStream nodes (`NatsCluster::start(3)`), each with its own
/// store dir and ports. Nodes can be killed and restarted individually.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

/// How to start a cluster ([`NatsCluster::start_with`]).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub size: usize,
    /// The cluster's name; nodes are called `<name>-n1`, `<name>-n2`, ...
    /// Defaults to a name unique to this process. Keep it the same across
    /// runs that reuse `store_root`: JetStream knows its peers by name.
    pub name: Option<String>,
    /// Keep node `i`'s JetStream data in `<store_root>/n<i>` instead of a
    /// temporary directory.
    pub store_root: Option<PathBuf>,
    /// Client port of the first node; `None` (and the other nodes) let the
    /// OS pick a free one.
    pub first_port: Option<u16>,
    /// Serve each node's monitoring endpoint (`/healthz`, `/jsz`, ...).
    pub monitoring: bool,
}

impl ClusterOptions {
    /// `size` nodes with temporary stores, free ports and monitoring.
    pub fn new(size: usize) -> ClusterOptions {
        ClusterOptions {
            size,
            name: None,
            store_root: None,
            first_port: None,
            monitoring: true,
        }
    }
}

/// Free loopback ports for the route listeners. JetStream clustering needs
/// every node's routes configured up front, so these are chosen before any
/// node starts (bind to port 0, read it back, release); if another process
/// takes one in between, the node fails to start and we try again.
fn free_ports(n: usize) -> Result<Vec<u16>, NatsServerError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NatsServerError::io("finding free ports", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| NatsServerError::io("finding free ports", e))
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream answers on each.
    pub async fn start(size: usize) -> Result<NatsCluster, NatsServerError> {
        Self::start_with(ClusterOptions::new(size)).await
    }

    /// Starts a cluster as `opts` describes and waits until JetStream
    /// answers on each node.
    pub async fn start_with(opts: ClusterOptions) -> Result<NatsCluster, NatsServerError> {
        if opts.size == 0 {
            return Err(NatsServerError::NotReady {
                reason: "a cluster needs at least one node".into(),
                log: String::new(),
            });
        }
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&opts).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| NatsServerError::NotReady {
            reason: "cluster did not start".into(),
            log: String::new(),
        }))
    }

    async fn try_start(opts: &ClusterOptions) -> Result<NatsCluster, NatsServerError> {
        let size = opts.size;
        let ports = free_ports(size)?;
        let cluster_name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("baton-test-{}-{}", std::process::id(), ports[0]));
        let mut nodes = Vec::with_capacity(size);
        for (i, port) in ports.iter().enumerate() {
            let opts = ServerOptions {
                name: Some(format!("{cluster_name}-n{}", i + 1)),
                store_dir: opts
                    .store_root
                    .as_ref()
                    .map(|root| root.join(format!("n{}", i + 1))),
                port: if i == 0 { opts.first_port } else { None },
                monitoring: opts.monitoring,
                cluster: Some(ClusterSettings {
                    name: cluster_name.clone(),
                    port: *port,
                    routes: ports.iter().copied().filter(|p| p != port).collect(),
                }),
                ..ServerOptions::default()
            };
            nodes.push(NatsServer::spawn_with(opts)?);
        }
        for node in &mut nodes {
            node.wait_listening().await?;
        }
        for node in &nodes {
            node.wait_jetstream().await?;
        }
        Ok(NatsCluster { nodes })
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// All client URLs, comma-separated (what `--nats` accepts).
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == name)
    }

    /// Every node, in order.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Stops every node (also done on drop).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` with its ports and store, and waits for JetStream.
    pub async fn restart(&mut self, i: usize) -> Result<(), NatsServerError> {
        self.nodes[i].restart().await?;
        self.nodes[i].wait_jetstream().await
    }
}
