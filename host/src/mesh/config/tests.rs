use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn key(i: usize) -> PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    PublicKey(k)
}

fn params(topology: Topology) -> MeshParams<'static> {
    MeshParams {
        id: "0123456789abcdef",
        topology,
        listen_port: 51820,
        keepalive: 25,
        mtu: 1420,
        generation: 7,
    }
}

struct Fixture {
    names: Vec<String>,
    hosts: Vec<String>,
    lans: Vec<Vec<IpNet>>,
    overlays: Vec<IpAddr>,
    hubs: Vec<bool>,
}

impl Fixture {
    /// `n` members, overlay 10.99.0.(i+1) or fd00::(i+1), LAN 192.168.i.0/24 where `lan[i]`.
    fn new(n: usize, v6: bool, lan: impl Fn(usize) -> bool, hub: impl Fn(usize) -> bool) -> Self {
        Fixture {
            names: (0..n).map(|i| format!("n{i}")).collect(),
            hosts: (0..n)
                .map(|i| format!("198.51.100.{}", i % 250 + 1))
                .collect(),
            lans: (0..n)
                .map(|i| {
                    if lan(i) {
                        vec![
                            format!("172.{}.{}.0/24", 16 + i / 256, i % 256)
                                .parse()
                                .unwrap(),
                        ]
                    } else {
                        vec![]
                    }
                })
                .collect(),
            overlays: (0..n)
                .map(|i| {
                    if v6 {
                        IpAddr::V6(std::net::Ipv6Addr::from(
                            0xfd00_u128 << 112 | (i as u128 + 1),
                        ))
                    } else {
                        IpAddr::V4(std::net::Ipv4Addr::from(0x0a63_0000 + i as u32 + 1))
                    }
                })
                .collect(),
            hubs: (0..n).map(hub).collect(),
        }
    }

    fn members(&self) -> Vec<Member<'_>> {
        (0..self.names.len())
            .map(|i| Member {
                node: &self.names[i],
                public_key: key(i),
                overlay: self.overlays[i],
                endpoint_host: &self.hosts[i],
                lan: &self.lans[i],
                hub: self.hubs[i],
            })
            .collect()
    }
}

/// Where `from`'s interface sends a packet for `dst`: the member whose key holds the longest
/// matching prefix, or none.
fn next_hop(cfg: &MeshSpec, dst: IpAddr) -> Option<usize> {
    cfg.peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(move |n| (n, p.public_key)))
        .filter(|(n, _)| n.contains(&dst))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(_, k)| (u64::from_be_bytes(k.0[..8].try_into().unwrap()) - 1) as usize)
}

/// Follows next hops from `from` to the member that owns `dst`; the hops taken.
fn route(cfgs: &[MeshSpec], own: &[Vec<IpNet>], from: usize, dst: IpAddr) -> Option<usize> {
    let mut at = from;
    for hops in 1..=3 {
        let next = next_hop(&cfgs[at], dst)?;
        if own[next].iter().any(|n| n.contains(&dst)) {
            return Some(hops);
        }
        // A transit member must forward.
        if !cfgs[next].forward {
            return None;
        }
        at = next;
    }
    None
}

fn own(f: &Fixture) -> Vec<Vec<IpNet>> {
    f.members().iter().map(own_prefixes).collect()
}

#[test]
fn a_full_mesh_gives_each_member_every_other_as_a_direct_peer() {
    let f = Fixture::new(3, false, |i| i != 1, |_| false);
    let cfgs = generate(&params(Topology::FullMesh), &f.members());
    assert_eq!(cfgs.len(), 3);
    let a = &cfgs[0];
    assert_eq!(a.interface, "wg-01234567");
    assert_eq!(a.address.to_string(), "10.99.0.1/32");
    assert_eq!(a.generation, 7);
    assert!(a.forward, "a member with a LAN forwards");
    assert!(!cfgs[1].forward, "a member without one does not");
    assert_eq!(a.peers.len(), 2);
    assert_eq!(a.peers[0].public_key, key(1));
    assert_eq!(a.peers[0].endpoint.as_deref(), Some("198.51.100.2:51820"));
    assert_eq!(a.peers[0].persistent_keepalive, Some(25));
    let allowed = |p: &MeshPeerSpec| {
        p.allowed_ips
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(allowed(&a.peers[0]), ["10.99.0.2/32"]);
    assert_eq!(allowed(&a.peers[1]), ["10.99.0.3/32", "172.16.2.0/24"]);
}

#[test]
fn an_ipv6_overlay_uses_host_prefixes_of_128_and_bracketed_endpoints() {
    let mut f = Fixture::new(2, true, |_| false, |_| false);
    f.hosts[1] = "2001:db8::2".into();
    let cfgs = generate(&params(Topology::FullMesh), &f.members());
    assert_eq!(cfgs[0].address.to_string(), "fd00::1/128");
    assert_eq!(cfgs[0].peers[0].allowed_ips[0].to_string(), "fd00::2/128");
    assert_eq!(
        cfgs[0].peers[0].endpoint.as_deref(),
        Some("[2001:db8::2]:51820")
    );
}

#[test]
fn spokes_peer_only_with_hubs_and_reach_each_other_through_them() {
    // n0 is the hub; n1, n2 spokes with LANs.
    let f = Fixture::new(3, false, |i| i > 0, |i| i == 0);
    let cfgs = generate(&params(Topology::HubAndSpoke), &f.members());
    let hub = &cfgs[0];
    assert_eq!(hub.peers.len(), 2, "the hub peers with both spokes");
    assert!(hub.forward, "a hub with spokes forwards");
    let spoke = &cfgs[1];
    assert_eq!(spoke.peers.len(), 1, "a spoke peers with the hub only");
    let carried: Vec<String> = spoke.peers[0]
        .allowed_ips
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        carried,
        ["10.99.0.1/32", "10.99.0.3/32", "172.16.2.0/24"],
        "the hub's entry carries the hub and the other spoke, not the spoke itself"
    );
    let own = own(&f);
    assert_eq!(route(&cfgs, &own, 1, f.overlays[2]), Some(2));
    assert_eq!(
        route(&cfgs, &own, 1, "172.16.2.9".parse().unwrap()),
        Some(2)
    );
}

#[test]
fn with_several_hubs_each_spoke_is_routed_through_exactly_one() {
    let f = Fixture::new(8, false, |_| true, |i| i < 3);
    let cfgs = generate(&params(Topology::HubAndSpoke), &f.members());
    for spoke in &cfgs[3..] {
        assert_eq!(spoke.peers.len(), 3);
    }
    // Spoke 3's hub entries together carry every other spoke exactly once.
    let mut seen = BTreeMap::new();
    for p in &cfgs[3].peers {
        for n in p.allowed_ips.iter() {
            *seen.entry(*n).or_insert(0) += 1;
        }
    }
    assert!(seen.values().all(|&c| c == 1));
    assert_eq!(seen.len(), 2 * 8 - 2, "every prefix but spoke 3's own two");
}

#[test]
fn keepalive_zero_turns_keepalives_off() {
    let f = Fixture::new(2, false, |_| false, |_| false);
    let mut p = params(Topology::FullMesh);
    p.keepalive = 0;
    let cfgs = generate(&p, &f.members());
    assert_eq!(cfgs[0].peers[0].persistent_keepalive, None);
}

#[test]
fn a_lone_member_has_no_peers() {
    let f = Fixture::new(1, false, |_| true, |_| false);
    let cfgs = generate(&params(Topology::FullMesh), &f.members());
    assert!(cfgs[0].peers.is_empty());
}

proptest! {
    /// The model: every member reaches every other member's overlay address and LAN — in one
    /// hop in a full mesh, in at most two (through a forwarding hub) in hub and spoke — and no
    /// prefix sits on two entries of one interface.
    #[test]
    fn every_member_reaches_every_other(
        n in 1usize..24,
        hubs in 1usize..4,
        v6 in any::<bool>(),
        lan_mask in any::<u32>(),
        hub_and_spoke in any::<bool>(),
    ) {
        let hubs = hubs.min(n);
        let f = Fixture::new(n, v6, |i| lan_mask >> (i % 32) & 1 == 1, |i| i < hubs);
        let topology = if hub_and_spoke { Topology::HubAndSpoke } else { Topology::FullMesh };
        let cfgs = generate(&params(topology), &f.members());
        let own = own(&f);
        for (a, cfg) in cfgs.iter().enumerate() {
            let mut nets: Vec<IpNet> = cfg.peers.iter().flat_map(|p| p.allowed_ips.iter().copied()).collect();
            let total = nets.len();
            nets.sort();
            nets.dedup();
            prop_assert_eq!(nets.len(), total, "a prefix on two entries of member {}", a);
            prop_assert!(!nets.iter().any(|n| own[a].contains(n)), "member {} routes its own prefix away", a);
            for b in (0..n).filter(|&b| b != a) {
                for dst in own[b].iter().map(|n| n.addr()) {
                    let hops = route(&cfgs, &own, a, dst);
                    let direct = !hub_and_spoke || a < hubs || b < hubs;
                    prop_assert_eq!(hops, Some(if direct { 1 } else { 2 }), "{} -> {} ({})", a, b, dst);
                }
            }
        }
    }
}
