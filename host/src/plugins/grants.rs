//! The one place that decides whether a plugin may do something outside its sandbox. Every
//! host import that reaches the network or the store asks here first.
//!
//! The decision is an exhaustive `match` over (world, request) with no catch-all arm: a new
//! world or a new kind of request does not compile until someone decides what it may do.

use super::manifest::{Permissions, World};
use std::net::IpAddr;

/// Something a plugin asks the host to do for it.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// An HTTP request to `host:port`.
    Http { host: &'a str, port: u16 },
    /// An ICMP echo to an address.
    IcmpEcho { address: IpAddr },
    /// A TCP connect to an address and port.
    TcpConnect { address: IpAddr, port: u16 },
    /// Reading pools and records.
    IpamRead,
    /// Changing devices, reservations and history.
    IpamWrite,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{world} plugins cannot {what}")]
    NotInWorld { world: World, what: &'static str },
    #[error("{host}:{port} is not among the outbound hosts its manifest grants")]
    HostNotGranted { host: String, port: u16 },
    #[error("port {0} is not among the probe ports its manifest grants")]
    PortNotGranted(u16),
    #[error("{0} is outside every weft pool")]
    OutsidePools(IpAddr),
}

/// Whether a plugin of `world` with `permissions` may do `ask`. `in_pools` tells whether an
/// address belongs to one of weft's pools (probes never leave them).
pub fn check(
    world: World,
    permissions: &Permissions,
    in_pools: impl Fn(IpAddr) -> bool,
    ask: Ask<'_>,
) -> Result<(), Denied> {
    let not = |what| Err(Denied::NotInWorld { world, what });
    let pooled = |address| {
        if in_pools(address) {
            Ok(())
        } else {
            Err(Denied::OutsidePools(address))
        }
    };
    match (world, ask) {
        (World::IpamSync, Ask::Http { host, port }) => {
            let granted = permissions
                .outbound_hosts
                .iter()
                .any(|g| g.port == port && g.host.eq_ignore_ascii_case(host));
            if granted {
                Ok(())
            } else {
                Err(Denied::HostNotGranted {
                    host: host.to_string(),
                    port,
                })
            }
        }
        (World::NodeSelector | World::PingCheck, Ask::Http { .. }) => not("make HTTP requests"),
        (World::PingCheck, Ask::IcmpEcho { address }) => pooled(address),
        (World::PingCheck, Ask::TcpConnect { address, port }) => {
            if !permissions.probe_ports.contains(&port) {
                return Err(Denied::PortNotGranted(port));
            }
            pooled(address)
        }
        (World::NodeSelector | World::IpamSync, Ask::IcmpEcho { .. } | Ask::TcpConnect { .. }) => {
            not("probe addresses")
        }
        (World::IpamSync, Ask::IpamRead | Ask::IpamWrite) => Ok(()),
        (World::NodeSelector | World::PingCheck, Ask::IpamRead | Ask::IpamWrite) => {
            not("use weft's IPAM")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::manifest::Manifest;

    fn perms(text: &str) -> (World, Permissions) {
        let m = Manifest::parse(text).unwrap();
        (m.world, m.permissions)
    }

    fn ten(a: IpAddr) -> bool {
        matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 10)
    }

    #[test]
    fn a_sync_plugin_reaches_only_its_granted_hosts() {
        let (w, p) = perms(
            "name = \"s\"\nversion = \"1.0.0\"\nworld = \"ipam-sync\"\n[permissions]\noutbound_hosts = [\"netbox.example:443\"]\n",
        );
        let http = |host, port| check(w, &p, ten, Ask::Http { host, port });
        assert_eq!(http("NetBox.example", 443), Ok(()));
        assert!(matches!(
            http("netbox.example", 80),
            Err(Denied::HostNotGranted { .. })
        ));
        assert!(matches!(
            http("evil.example", 443),
            Err(Denied::HostNotGranted { .. })
        ));
        assert_eq!(check(w, &p, ten, Ask::IpamWrite), Ok(()));
    }

    #[test]
    fn probes_stay_inside_the_pools_and_the_granted_ports() {
        let (w, p) = perms(
            "name = \"p\"\nversion = \"1.0.0\"\nworld = \"ping-check\"\n[permissions]\nprobe_ports = [22]\n",
        );
        let inside: IpAddr = "10.0.0.1".parse().unwrap();
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        let tcp = |address, port| check(w, &p, ten, Ask::TcpConnect { address, port });
        assert_eq!(tcp(inside, 22), Ok(()));
        assert_eq!(tcp(inside, 80), Err(Denied::PortNotGranted(80)));
        assert_eq!(tcp(outside, 22), Err(Denied::OutsidePools(outside)));
        let icmp = |address| check(w, &p, ten, Ask::IcmpEcho { address });
        assert_eq!(icmp(outside), Err(Denied::OutsidePools(outside)));
        assert!(matches!(
            check(w, &p, ten, Ask::IpamRead),
            Err(Denied::NotInWorld { .. })
        ));
    }

    #[test]
    fn a_selector_may_do_nothing_outside() {
        let (w, p) = perms("name = \"n\"\nversion = \"1.0.0\"\nworld = \"node-selector\"\n");
        let address: IpAddr = "10.0.0.1".parse().unwrap();
        for ask in [
            Ask::Http {
                host: "x.example",
                port: 443,
            },
            Ask::IcmpEcho { address },
            Ask::TcpConnect { address, port: 22 },
            Ask::IpamRead,
            Ask::IpamWrite,
        ] {
            assert!(
                matches!(check(w, &p, ten, ask), Err(Denied::NotInWorld { .. })),
                "{ask:?}"
            );
        }
    }
}
