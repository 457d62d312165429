//! A real Redis Cluster of masters only, each a `RedisServer` from `servers`, with the 16384
//! slots split between them.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::servers::{RedisServer, free_port};

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start one master per entry of `maxmemory` (e.g. `["4mb", "64mb", "64mb"]`), join them
    /// and wait until every node reports `cluster_state:ok`.
    pub fn start(maxmemory: &[&str]) -> Self {
        let bus_ports: Vec<u16> = maxmemory.iter().map(|_| free_port()).collect();
        let nodes: Vec<RedisServer> = maxmemory
            .iter()
            .zip(&bus_ports)
            .map(|(max, bus)| {
                let bus = bus.to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--maxmemory",
                    max,
                ])
            })
            .collect();
        let n = nodes.len() as u32;
        let per_node = 16384 / n;
        for (i, node) in nodes.iter().enumerate() {
            let i = i as u32;
            let first = i * per_node;
            let last = if i == n - 1 {
                16383
            } else {
                first + per_node - 1
            };
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut node.client())
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        let mut first = nodes[0].client();
        for (other, bus) in nodes[1..].iter().zip(&bus_ports[1..]) {
            // The bus port is not port + 10000 here, so MEET must be told it.
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(other.port())
                .arg(*bus)
                .query(&mut first)
                .expect("CLUSTER MEET");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = nodes.iter().all(|node| {
                let mut c = node.client();
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
                let listing: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
                info.contains("cluster_state:ok")
                    && listing.lines().filter(|l| l.contains("master")).count() == nodes.len()
            });
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not form within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    /// A key that lives on `node` (found with CLUSTER KEYSLOT and the node's slot range).
    pub fn key_on(&self, node: usize, prefix: &str) -> String {
        let mut c = self.nodes[node].client();
        let n = self.nodes.len() as i64;
        let per_node = 16384 / n;
        for i in 0.. {
            let key = format!("{prefix}{i}");
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query(&mut c)
                .unwrap();
            let owner = (slot / per_node).min(n - 1);
            if owner == node as i64 {
                return key;
            }
        }
        unreachable!()
    }
}
