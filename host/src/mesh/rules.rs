//! What a valid mesh is, as far as the mesh itself tells: names, members, hubs, numbers, and
//! the overlap rule for LAN subnets. What needs the store (do the nodes exist, is there an
//! overlay pool, is a port free on a node) is checked by `store::meshes` with these.

use super::Topology;
use crate::agent_api::MESH_MTU;
use ipnet::IpNet;
use std::collections::HashSet;

/// Most members one mesh has.
pub const MAX_MEMBERS: usize = 4_096;
/// Most LAN subnets one member routes.
pub const MAX_LANS: usize = 64;
/// Longest keepalive, in seconds (WireGuard takes a u16; an hour is plenty).
pub const MAX_KEEPALIVE: u16 = 3_600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshRuleError {
    #[error("name: {0:?} must be 1 to 64 of A-Z a-z 0-9 . _ -")]
    Name(String),
    #[error("members: give at least one node")]
    NoMembers,
    #[error("members: at most {MAX_MEMBERS} nodes")]
    TooManyMembers,
    #[error("members: node {0:?} is listed twice")]
    Duplicate(String),
    #[error("hubs: a hub-and-spoke mesh needs at least one hub")]
    NoHubs,
    #[error("hubs: {0:?} is not a member of the mesh")]
    HubNotMember(String),
    #[error("hubs: only a hub-and-spoke mesh has hubs")]
    HubsInFullMesh,
    #[error("listen_port: give a port from 1 to 65535")]
    Port,
    #[error("mtu: {0} is outside {lo}..={hi}", lo = MESH_MTU.start(), hi = MESH_MTU.end())]
    Mtu(u16),
    #[error("keepalive: at most {MAX_KEEPALIVE} seconds (0 turns it off)")]
    Keepalive,
    #[error("overlay: a mesh's overlay subnet is the overlay pool's {expected}, not {given}")]
    WrongOverlay { expected: IpNet, given: String },
    #[error("lan_subnets: node {node:?} has {net}, whose host bits are set (did you mean {}?)", net.trunc())]
    HostBits { node: String, net: IpNet },
    #[error("lan_subnets: node {0:?} has more than {MAX_LANS} subnets")]
    TooManyLans(String),
    #[error("lan_subnets: {a} of node {a_node:?} overlaps {b} of node {b_node:?}")]
    Overlap {
        a: IpNet,
        a_node: String,
        b: IpNet,
        b_node: String,
    },
    #[error("lan_subnets: {net} of node {node:?} overlaps the overlay pool {overlay}")]
    OverlapsOverlay {
        net: IpNet,
        node: String,
        overlay: IpNet,
    },
}

/// A mesh as asked for, before the store checks its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshDraft {
    pub name: String,
    pub topology: Topology,
    pub hubs: Vec<String>,
    /// Node names with the LAN subnets each routes into the mesh.
    pub members: Vec<(String, Vec<IpNet>)>,
    /// None: the store picks the first port from [`super::FIRST_MESH_PORT`] up that no member
    /// uses yet.
    pub listen_port: Option<u16>,
    pub keepalive: u16,
    pub mtu: u16,
}

/// Checks a draft against the overlay pool's CIDR (and the overlay subnet the request named,
/// if it named one).
pub fn check(
    draft: &MeshDraft,
    overlay: IpNet,
    named_overlay: Option<&str>,
) -> Result<(), MeshRuleError> {
    if !crate::protocol::valid_node_id(&draft.name) {
        return Err(MeshRuleError::Name(draft.name.chars().take(80).collect()));
    }
    if let Some(given) = named_overlay
        && given.trim().parse::<IpNet>().ok() != Some(overlay)
    {
        return Err(MeshRuleError::WrongOverlay {
            expected: overlay,
            given: given.chars().take(64).collect(),
        });
    }
    if draft.members.is_empty() {
        return Err(MeshRuleError::NoMembers);
    }
    if draft.members.len() > MAX_MEMBERS {
        return Err(MeshRuleError::TooManyMembers);
    }
    let mut names = HashSet::new();
    for (node, lans) in &draft.members {
        if !names.insert(node.as_str()) {
            return Err(MeshRuleError::Duplicate(node.clone()));
        }
        if lans.len() > MAX_LANS {
            return Err(MeshRuleError::TooManyLans(node.clone()));
        }
    }
    match draft.topology {
        Topology::FullMesh if !draft.hubs.is_empty() => return Err(MeshRuleError::HubsInFullMesh),
        Topology::HubAndSpoke if draft.hubs.is_empty() => return Err(MeshRuleError::NoHubs),
        _ => {}
    }
    let mut hubs = HashSet::new();
    for h in &draft.hubs {
        if !names.contains(h.as_str()) {
            return Err(MeshRuleError::HubNotMember(h.clone()));
        }
        if !hubs.insert(h.as_str()) {
            return Err(MeshRuleError::Duplicate(h.clone()));
        }
    }
    if draft.listen_port == Some(0) {
        return Err(MeshRuleError::Port);
    }
    if !MESH_MTU.contains(&draft.mtu) {
        return Err(MeshRuleError::Mtu(draft.mtu));
    }
    if draft.keepalive > MAX_KEEPALIVE {
        return Err(MeshRuleError::Keepalive);
    }
    check_lans(overlay, &draft.members)
}

/// LAN subnets must be clean prefixes that overlap neither each other nor the overlay pool.
/// Sorted by first address, two CIDR prefixes overlap exactly when one contains the other, so
/// each prefix is compared with the widest one still open before it: O(n log n).
pub fn check_lans(overlay: IpNet, members: &[(String, Vec<IpNet>)]) -> Result<(), MeshRuleError> {
    let mut all: Vec<(IpNet, &str)> = Vec::new();
    for (node, lans) in members {
        for net in lans {
            if net.trunc() != *net {
                return Err(MeshRuleError::HostBits {
                    node: node.clone(),
                    net: *net,
                });
            }
            if net.contains(&overlay) || overlay.contains(net) {
                return Err(MeshRuleError::OverlapsOverlay {
                    net: *net,
                    node: node.clone(),
                    overlay,
                });
            }
            all.push((*net, node));
        }
    }
    // Same family together, then by first address, wider first.
    all.sort_by_key(|(n, _)| (n.addr().is_ipv6(), n.network(), n.prefix_len()));
    let mut open: Option<(IpNet, &str)> = None;
    for (net, node) in all {
        if let Some((o, o_node)) = open
            && o.contains(&net)
        {
            return Err(MeshRuleError::Overlap {
                a: o,
                a_node: o_node.to_string(),
                b: net,
                b_node: node.to_string(),
            });
        }
        let wider = match open {
            Some((o, _)) => {
                o.addr().is_ipv6() != net.addr().is_ipv6() || o.broadcast() < net.broadcast()
            }
            None => true,
        };
        if wider {
            open = Some((net, node));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn draft(members: &[(&str, &[&str])]) -> MeshDraft {
        MeshDraft {
            name: "m".into(),
            topology: Topology::FullMesh,
            hubs: vec![],
            members: members
                .iter()
                .map(|(n, l)| {
                    (
                        n.to_string(),
                        l.iter().map(|s| s.parse().unwrap()).collect(),
                    )
                })
                .collect(),
            listen_port: Some(51821),
            keepalive: 25,
            mtu: 1420,
        }
    }

    fn overlay() -> IpNet {
        "10.99.0.0/24".parse().unwrap()
    }

    #[test]
    fn overlapping_lans_are_refused_naming_both_sides() {
        let d = draft(&[("a", &["192.168.0.0/16"]), ("b", &["192.168.7.0/24"])]);
        let e = check(&d, overlay(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "lan_subnets: 192.168.0.0/16 of node \"a\" overlaps 192.168.7.0/24 of node \"b\""
        );
    }

    #[test]
    fn a_lan_may_not_overlap_the_overlay_pool() {
        let d = draft(&[("a", &["10.99.0.128/25"])]);
        let e = check(&d, overlay(), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("overlaps the overlay pool 10.99.0.0/24"),
            "{e}"
        );
        let d = draft(&[("a", &["10.0.0.0/8"])]);
        assert!(matches!(
            check(&d, overlay(), None),
            Err(MeshRuleError::OverlapsOverlay { .. })
        ));
    }

    #[test]
    fn a_named_overlay_must_be_the_pools() {
        let d = draft(&[("a", &[])]);
        assert!(check(&d, overlay(), Some("10.99.0.0/24")).is_ok());
        let e = check(&d, overlay(), Some("10.98.0.0/24")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "overlay: a mesh's overlay subnet is the overlay pool's 10.99.0.0/24, not 10.98.0.0/24"
        );
    }

    #[test]
    fn hubs_belong_to_hub_and_spoke_meshes_and_to_the_members() {
        let mut d = draft(&[("a", &[]), ("b", &[])]);
        d.hubs = vec!["a".into()];
        assert_eq!(
            check(&d, overlay(), None),
            Err(MeshRuleError::HubsInFullMesh)
        );
        d.topology = Topology::HubAndSpoke;
        assert!(check(&d, overlay(), None).is_ok());
        d.hubs = vec!["c".into()];
        assert_eq!(
            check(&d, overlay(), None),
            Err(MeshRuleError::HubNotMember("c".into()))
        );
        d.hubs.clear();
        assert_eq!(check(&d, overlay(), None), Err(MeshRuleError::NoHubs));
    }

    #[test]
    fn numbers_and_names_are_checked() {
        let mut d = draft(&[("a", &[]), ("a", &[])]);
        assert_eq!(
            check(&d, overlay(), None),
            Err(MeshRuleError::Duplicate("a".into()))
        );
        d.members.pop();
        d.mtu = 9000;
        assert_eq!(check(&d, overlay(), None), Err(MeshRuleError::Mtu(9000)));
        d.mtu = 1420;
        d.listen_port = Some(0);
        assert_eq!(check(&d, overlay(), None), Err(MeshRuleError::Port));
        d.listen_port = None;
        d.name = "no spaces".into();
        assert!(matches!(
            check(&d, overlay(), None),
            Err(MeshRuleError::Name(_))
        ));
        let d = draft(&[]);
        assert_eq!(check(&d, overlay(), None), Err(MeshRuleError::NoMembers));
        let d = draft(&[("a", &["192.168.1.1/24"])]);
        assert!(
            check(&d, overlay(), None)
                .unwrap_err()
                .to_string()
                .contains("did you mean 192.168.1.0/24")
        );
    }

    proptest! {
        /// The sort-and-sweep finds an overlap exactly when some pair overlaps.
        #[test]
        fn the_sweep_agrees_with_comparing_every_pair(
            nets in proptest::collection::vec((any::<u32>(), 8u8..=32, any::<bool>()), 0..12)
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, len, v6)| {
                    if v6 {
                        IpNet::new(std::net::IpAddr::V6(std::net::Ipv6Addr::from((a as u128) << 96)), len).unwrap().trunc()
                    } else {
                        // Keep clear of the overlay (10/8 region).
                        IpNet::new(std::net::IpAddr::V4(std::net::Ipv4Addr::from(a | 0x8000_0000)), len.max(2)).unwrap().trunc()
                    }
                })
                .collect();
            let members: Vec<(String, Vec<IpNet>)> =
                nets.iter().enumerate().map(|(i, n)| (format!("n{i}"), vec![*n])).collect();
            let any_pair = (0..nets.len()).any(|i| {
                (0..i).any(|j| nets[i].contains(&nets[j]) || nets[j].contains(&nets[i]))
            });
            let overlay: IpNet = "10.99.0.0/24".parse().unwrap();
            prop_assert_eq!(check_lans(overlay, &members).is_err(), any_pair);
        }
    }
}
