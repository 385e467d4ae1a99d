//! A mesh's WireGuard configuration, one [`MeshSpec`] per member: a pure function of the mesh
//! and its members.
//!
//! - Full mesh: each member has one peer per other member, whose allowed IPs are that
//!   member's overlay address and LAN subnets.
//! - Hub and spoke: hubs peer with every other member. Spokes peer with the hubs only; each
//!   spoke's prefixes are routed through one hub (the spokes are dealt to the hubs in turn),
//!   so a hub's entry on a spoke carries the hub's own prefixes plus those of the other
//!   spokes dealt to it. A prefix is never on two entries of one interface, as WireGuard
//!   requires.
//!
//! Each member's prefixes are built once and shared (`Arc`) by every entry that carries only
//! them, so a 1,000-node full mesh holds 1,000 prefix lists, not a million.

use super::Topology;
use crate::agent_api::{MeshPeerSpec, MeshSpec, PublicKey, mesh_interface};
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

/// The mesh-wide settings.
#[derive(Debug, Clone)]
pub struct MeshParams<'a> {
    pub id: &'a str,
    pub topology: Topology,
    pub listen_port: u16,
    /// Seconds; 0 turns keepalives off.
    pub keepalive: u16,
    pub mtu: u16,
    pub generation: u64,
}

/// One member as configuration needs it.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub node: &'a str,
    /// The node's mesh key.
    pub public_key: PublicKey,
    pub overlay: IpAddr,
    /// The host peers send to (a name or an address); the port is the mesh's.
    pub endpoint_host: &'a str,
    pub lan: &'a [IpNet],
    pub hub: bool,
}

/// `host:port`, with an IPv6 literal in brackets.
pub fn endpoint(host: &str, port: u16) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

fn host_prefix(ip: IpAddr) -> IpNet {
    // A full-length prefix is always valid.
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).unwrap_or_else(|_| IpNet::from(ip))
}

/// A member's own prefixes: its overlay address, then its LAN subnets.
fn own_prefixes(m: &Member) -> Vec<IpNet> {
    let mut v = Vec::with_capacity(1 + m.lan.len());
    v.push(host_prefix(m.overlay));
    v.extend_from_slice(m.lan);
    v
}

/// The configuration of every member, in the order given.
pub fn generate(params: &MeshParams, members: &[Member]) -> Vec<MeshSpec> {
    let interface = mesh_interface(params.id);
    let keepalive = (params.keepalive > 0).then_some(params.keepalive);
    let own: Vec<Arc<[IpNet]>> = members.iter().map(|m| own_prefixes(m).into()).collect();
    let endpoints: Vec<Arc<str>> = members
        .iter()
        .map(|m| endpoint(m.endpoint_host, params.listen_port).into())
        .collect();
    let entry = |j: usize, allowed: Arc<[IpNet]>| MeshPeerSpec {
        public_key: members[j].public_key,
        endpoint: Some(endpoints[j].clone()),
        allowed_ips: allowed,
        persistent_keepalive: keepalive,
    };
    let hubs: Vec<usize> = match params.topology {
        Topology::FullMesh => Vec::new(),
        Topology::HubAndSpoke => (0..members.len()).filter(|&i| members[i].hub).collect(),
    };
    // Hub and spoke: the spokes whose prefixes each hub (by index into `hubs`) routes.
    let mut spokes_of_hub: Vec<Vec<usize>> = vec![Vec::new(); hubs.len()];
    if !hubs.is_empty() {
        let spokes = (0..members.len()).filter(|&i| !members[i].hub);
        for (turn, s) in spokes.enumerate() {
            spokes_of_hub[turn % hubs.len()].push(s);
        }
    }
    members
        .iter()
        .enumerate()
        .map(|(i, me)| {
            let peers: Vec<MeshPeerSpec> = match params.topology {
                Topology::FullMesh => (0..members.len())
                    .filter(|&j| j != i)
                    .map(|j| entry(j, own[j].clone()))
                    .collect(),
                Topology::HubAndSpoke if me.hub => (0..members.len())
                    .filter(|&j| j != i)
                    .map(|j| entry(j, own[j].clone()))
                    .collect(),
                Topology::HubAndSpoke => hubs
                    .iter()
                    .enumerate()
                    .map(|(h, &j)| {
                        let routed = spokes_of_hub[h].iter().filter(|&&s| s != i);
                        let mut allowed = own[j].to_vec();
                        for &s in routed {
                            allowed.extend_from_slice(&own[s]);
                        }
                        entry(j, allowed.into())
                    })
                    .collect(),
            };
            let has_spokes = me.hub && members.len() > hubs.len();
            MeshSpec {
                generation: params.generation,
                interface: interface.clone(),
                address: host_prefix(me.overlay),
                listen_port: params.listen_port,
                mtu: params.mtu,
                forward: !me.lan.is_empty() || has_spokes,
                peers,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
