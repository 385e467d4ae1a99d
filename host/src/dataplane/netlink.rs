//! An interface's address, MTU and link state, set over rtnetlink (never by running `ip`).

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: cannot open a connection: {0}")]
    Connect(std::io::Error),
    #[error("netlink: no interface named {0}")]
    NoLink(String),
    #[error("netlink: route on {iface}: {why}")]
    Route { iface: String, why: String },
    #[error("netlink: {what} on {iface}: {source}")]
    Call {
        what: &'static str,
        iface: String,
        source: rtnetlink::Error,
    },
}

async fn handle() -> Result<Handle, NetlinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn index(handle: &Handle, iface: &str) -> Result<u32, NetlinkError> {
    let call = |source| NetlinkError::Call {
        what: "find link",
        iface: iface.to_string(),
        source,
    };
    let mut links = handle.link().get().match_name(iface.to_string()).execute();
    match links.try_next().await.map_err(call)? {
        Some(link) => Ok(link.header.index),
        None => Err(NetlinkError::NoLink(iface.to_string())),
    }
}

/// A netlink connection and the index of `iface`.
async fn open(iface: &str) -> Result<(Handle, u32), NetlinkError> {
    let handle = handle().await?;
    let index = index(&handle, iface).await?;
    Ok((handle, index))
}

/// The error of a netlink call `what` on `iface`.
fn failed<'a>(
    iface: &'a str,
    what: &'static str,
) -> impl Fn(rtnetlink::Error) -> NetlinkError + 'a {
    move |source| NetlinkError::Call {
        what,
        iface: iface.to_string(),
        source,
    }
}

/// Makes `address` the interface's only address, sets its MTU and brings it up. The kernel
/// then routes the address's prefix to the interface.
pub async fn configure(iface: &str, address: IpNet, mtu: u32) -> Result<(), NetlinkError> {
    let (handle, index) = open(iface).await?;
    let call = |what| failed(iface, what);
    let mut existing = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut stale = Vec::new();
    while let Some(msg) = existing.try_next().await.map_err(call("list addresses"))? {
        stale.push(msg);
    }
    for msg in stale {
        handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(call("remove address"))?;
    }
    handle
        .address()
        .add(index, address.addr(), address.prefix_len())
        .execute()
        .await
        .map_err(call("add address"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(call("set MTU and up"))?;
    Ok(())
}

/// Makes `wanted` the interface's routes: adds the missing ones and removes the ones weft
/// added (protocol `static`) that are no longer wanted. Routes the kernel made (for the
/// interface's own address) are left alone.
pub async fn set_routes(iface: &str, wanted: &[IpNet]) -> Result<(), NetlinkError> {
    let (handle, index) = open(iface).await?;
    let call = |what| failed(iface, what);
    let wanted: HashSet<IpNet> = wanted.iter().map(IpNet::trunc).collect();
    let mut have = HashSet::new();
    let mut stale = Vec::new();
    for dump in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut routes = handle.route().get(dump).execute();
        while let Some(msg) = routes.try_next().await.map_err(call("list routes"))? {
            if !msg.attributes.contains(&RouteAttribute::Oif(index))
                || msg.header.protocol != RouteProtocol::Static
            {
                continue;
            }
            match destination(&msg) {
                Some(net) if wanted.contains(&net) => {
                    have.insert(net);
                }
                _ => stale.push(msg),
            }
        }
    }
    for msg in stale {
        handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(call("remove route"))?;
    }
    for net in wanted.difference(&have) {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.addr(), net.prefix_len())
            .map_err(|e| NetlinkError::Route {
                iface: iface.to_string(),
                why: e.to_string(),
            })?
            .output_interface(index)
            .protocol(RouteProtocol::Static)
            .build();
        handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(call("add route"))?;
    }
    Ok(())
}

fn destination(msg: &RouteMessage) -> Option<IpNet> {
    let len = msg.header.destination_prefix_length;
    let addr = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    IpNet::new(addr, len).ok()
}

/// Turns on IP forwarding for the families of `nets` (the node routes between the mesh and
/// its LAN, or between spokes). Never turned off again: something else may rely on it.
pub fn enable_forwarding(v4: bool, v6: bool) -> std::io::Result<()> {
    if v4 {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    }
    if v6 {
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}
