//! A JetStream cluster of `nats-server` processes on loopback.

use std::net::TcpListener;

use crate::{
    TestkitError,
    server::{ClusterSettings, NatsServer, ServerOptions},
};

/// A cluster of JetStream nodes (`NatsCluster::start(3)`), each with its own
/// store dir and ports. Nodes can be killed and restarted individually.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

/// Free loopback ports for the route listeners. JetStream clustering needs
/// every node's routes configured up front, so these are chosen before any
/// node starts (bind to port 0, read it back, release); if another process
/// takes one in between, the node fails to start and we try again.
fn free_ports(n: usize) -> Result<Vec<u16>, TestkitError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TestkitError::io("finding free ports", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| TestkitError::io("finding free ports", e))
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream answers on each.
    pub async fn start(size: usize) -> Result<NatsCluster, TestkitError> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(size).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::NotReady {
            reason: "cluster did not start".into(),
            log: String::new(),
        }))
    }

    async fn try_start(size: usize) -> Result<NatsCluster, TestkitError> {
        let ports = free_ports(size)?;
        let cluster_name = format!("baton-test-{}-{}", std::process::id(), ports[0]);
        let mut nodes = Vec::with_capacity(size);
        for (i, port) in ports.iter().enumerate() {
            let opts = ServerOptions {
                name: Some(format!("{cluster_name}-n{}", i + 1)),
                monitoring: true,
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

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` with its ports and store, and waits for JetStream.
    pub async fn restart(&mut self, i: usize) -> Result<(), TestkitError> {
        self.nodes[i].restart().await?;
        self.nodes[i].wait_jetstream().await
    }
}
