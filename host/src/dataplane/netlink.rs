//! An interface's address, MTU and link state, set over rtnetlink (never by running `ip`).

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{Handle, LinkUnspec};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: cannot open a connection: {0}")]
    Connect(std::io::Error),
    #[error("netlink: no interface named {0}")]
    NoLink(String),
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

/// Makes `address` the interface's only address, sets its MTU and brings it up. The kernel
/// then routes the address's prefix to the interface.
pub async fn configure(iface: &str, address: IpNet, mtu: u32) -> Result<(), NetlinkError> {
    let handle = handle().await?;
    let index = index(&handle, iface).await?;
    let call = |what| {
        move |source| NetlinkError::Call {
            what,
            iface: iface.to_string(),
            source,
        }
    };
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
