//! Peers: WireGuard clients placed on a node, each with an address from the node's peer pool.
//! A peer and its address are created and removed together, in one transaction, so no
//! address is ever held for a peer that does not exist (nor the other way round).

use super::records::How;
use super::{Reader, Result, StoreError, Writer, encode, get_json};
use crate::agent_api::PublicKey;
use crate::ipam::{AddrType, Status};
use ipnet::IpNet;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Longest peer name.
pub const MAX_PEER_NAME: usize = 64;

/// A peer as stored. No private key: weft never keeps one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: u64,
    pub name: String,
    /// The node (its name, which is its id) whose peer interface the peer connects to.
    pub node: String,
    pub address: IpAddr,
    pub public_key: PublicKey,
    pub created: jiff::Timestamp,
    /// The token or user that created it.
    pub created_by: String,
}

/// What creating a peer needs once its node is chosen.
#[derive(Debug, Clone)]
pub struct NewPeer {
    pub name: String,
    pub node: String,
    /// The node's peer pool (id or name): the peer's address comes from it.
    pub pool: String,
    pub public_key: PublicKey,
}

/// Whether `name` may name a peer: 1 to 64 of `A-Z a-z 0-9 . _ -` (it goes into owners,
/// paths and file names unescaped).
pub fn valid_peer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PEER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn check_peer_name(name: &str) -> Result<()> {
    if valid_peer_name(name) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "peer name {:?} must be 1 to {MAX_PEER_NAME} of A-Z a-z 0-9 . _ -",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// The owner written on a peer's address record.
pub fn peer_owner(name: &str) -> String {
    format!("peer:{name}")
}

/// The owner written on a node's peer-interface address when its pool has no gateway.
fn interface_owner(node: &str) -> String {
    format!("node:{node}")
}

/// The address of a node's peer interface in `pool`, with the pool's prefix length: the
/// pool's gateway (never handed out) or, in a pool without one, its first usable address,
/// which [`Writer::create_peer`] holds for the node before any peer takes it.
fn interface_address(pool: &super::Pool) -> Result<IpNet> {
    let layout = pool.layout()?;
    let v = layout.gateway.unwrap_or(layout.usable.start);
    let ip = layout.key(v).ip();
    IpNet::new(ip, pool.cidr.prefix_len())
        .map_err(|e| StoreError::corrupt("pools", format!("pool {}: {e}", pool.name)))
}

impl Reader {
    pub fn peer(&self, name: &str) -> Result<Option<Peer>> {
        get_json(self.t.peers()?, "peers", name)
    }

    /// Every peer, by name.
    pub fn peers(&self) -> Result<Vec<Peer>> {
        let mut out = Vec::new();
        for e in self.t.peers()?.iter()? {
            out.push(super::decode("peers", e?.1.value())?);
        }
        Ok(out)
    }

    /// The number of peers placed on `node`.
    pub fn peer_count(&self, node: &str) -> Result<u32> {
        let mut n = 0u32;
        for e in self.t.peers_by_node()?.range((node, "")..)? {
            if e?.0.value().0 != node {
                break;
            }
            n = n.saturating_add(1);
        }
        Ok(n)
    }

    /// Peers per node, for every node that has any.
    pub fn peer_counts(&self) -> Result<BTreeMap<String, u32>> {
        let mut out = BTreeMap::<String, u32>::new();
        for e in self.t.peers_by_node()?.iter()? {
            let count = out.entry(e?.0.value().0.to_string()).or_default();
            *count = count.saturating_add(1);
        }
        Ok(out)
    }

    /// The peer holding `key`, if any.
    pub fn peer_by_key(&self, key: &PublicKey) -> Result<Option<String>> {
        Ok(self
            .t
            .peer_keys()?
            .get(key.0.as_slice())?
            .map(|g| g.value().to_string()))
    }

    /// The address a node's peer interface takes in `pool` (id or name), with the pool's
    /// prefix length.
    pub fn peer_interface_address(&self, pool: &str) -> Result<IpNet> {
        interface_address(&self.pool(pool)?)
    }
}

impl Writer<'_> {
    /// Creates a peer and allocates its address from the node's peer pool, in this
    /// transaction. Refuses a taken name or public key before touching the pool.
    pub fn create_peer(&mut self, new: &NewPeer, actor: &str) -> Result<Peer> {
        check_peer_name(&new.name)?;
        if self.t.peers.get(new.name.as_str())?.is_some() {
            return Err(StoreError::PeerNameTaken(new.name.clone()));
        }
        if let Some(other) = self.t.peer_keys.get(new.public_key.0.as_slice())? {
            return Err(StoreError::PeerKeyTaken {
                key: new.public_key.to_base64(),
                peer: other.value().to_string(),
            });
        }
        self.hold_interface_address(&new.pool, &new.node, actor)?;
        let req = super::AllocationRequest {
            address: None,
            owner: Some(peer_owner(&new.name)),
            hostname: None,
        };
        let rec = self.allocate(&new.pool, &req, None, actor)?;
        let peer = Peer {
            id: self.next_id("next_peer_id")?,
            name: new.name.clone(),
            node: new.node.clone(),
            address: rec.address,
            public_key: new.public_key,
            created: self.now,
            created_by: actor.to_string(),
        };
        self.t
            .peers
            .insert(peer.name.as_str(), encode(&peer).as_slice())?;
        self.t
            .peer_keys
            .insert(peer.public_key.0.as_slice(), peer.name.as_str())?;
        self.t
            .peers_by_node
            .insert((peer.node.as_str(), peer.name.as_str()), ())?;
        Ok(peer)
    }

    /// Deletes a peer and releases its address, in this transaction. An address someone has
    /// since taken over (another owner) is left alone.
    pub fn delete_peer(&mut self, name: &str, actor: &str) -> Result<Peer> {
        let peer: Peer = get_json(self.t.peers.table()?, "peers", name)?
            .ok_or_else(|| StoreError::NotFound(format!("peer {name:?}")))?;
        let owner = peer_owner(&peer.name);
        if let Some(r) = self.address(peer.address)?
            && r.status == Status::Allocated
            && r.owner.as_deref() == Some(owner.as_str())
        {
            self.release(peer.address, actor)?;
        }
        self.t.peers.remove(name)?;
        self.t.peer_keys.remove(peer.public_key.0.as_slice())?;
        self.t
            .peers_by_node
            .remove((peer.node.as_str(), peer.name.as_str()))?;
        Ok(peer)
    }

    /// In a pool without a gateway, the interface takes the first usable address: allocate
    /// it for the node so that next-free never hands it to a peer.
    fn hold_interface_address(&mut self, pool: &str, node: &str, actor: &str) -> Result<()> {
        let mut pool = self.pool(pool)?;
        let layout = pool.layout()?;
        if layout.gateway.is_some() {
            return Ok(());
        }
        let ip = layout.key(layout.usable.start).ip();
        let held = self
            .address(ip)?
            .is_some_and(|r| r.status != Status::Available);
        if held {
            return Ok(());
        }
        let owner = interface_owner(node);
        self.change(
            &mut pool,
            &layout,
            ip,
            How::by(actor).action("allocate"),
            |r| {
                r.set_status(Status::Allocated)?;
                r.addr_type = AddrType::Static;
                r.owner = Some(owner);
                Ok(())
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PoolSpec, Store};

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn new_peer(name: &str, node: &str, b: u8) -> NewPeer {
        NewPeer {
            name: name.into(),
            node: node.into(),
            pool: "peers-a".into(),
            public_key: key(b),
        }
    }

    async fn store(dir: &tempfile::TempDir, reserve_gateway: bool) -> Store {
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let spec = PoolSpec {
            name: "peers-a".into(),
            cidr: "10.8.0.0/29".parse().unwrap(),
            description: None,
            reserve_gateway,
            static_ranges: vec![],
        };
        store
            .write(move |w| w.create_pool(&spec, "test"))
            .await
            .unwrap();
        store
    }

    #[test]
    fn peer_names_are_short_and_plain() {
        assert!(valid_peer_name("laptop-1.home_a"));
        assert!(valid_peer_name(&"a".repeat(64)));
        for bad in ["", "a b", "a/b", "é", "a:b", &"a".repeat(65)] {
            assert!(!valid_peer_name(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn creating_a_peer_allocates_its_address_in_the_same_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, true).await;
        let p = new_peer("laptop", "node-a", 1);
        let peer = store
            .write(move |w| w.create_peer(&p, "alice"))
            .await
            .unwrap();
        // 10.8.0.1 is the gateway: the node's interface.
        assert_eq!(peer.address.to_string(), "10.8.0.2");
        assert_eq!(peer.created_by, "alice");
        store
            .read(|r| {
                let rec = r.address(peer.address)?;
                assert_eq!(rec.status, Status::Allocated);
                assert_eq!(rec.owner.as_deref(), Some("peer:laptop"));
                assert_eq!(r.peer("laptop")?, Some(peer.clone()));
                assert_eq!(r.peers()?, vec![peer.clone()]);
                assert_eq!(r.peer_count("node-a")?, 1);
                assert_eq!(r.peer_count("node-b")?, 0);
                assert_eq!(r.peer_by_key(&key(1))?.as_deref(), Some("laptop"));
                assert_eq!(
                    r.peer_interface_address("peers-a")?.to_string(),
                    "10.8.0.1/29"
                );
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn deleting_a_peer_releases_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, true).await;
        let p = new_peer("laptop", "node-a", 1);
        let peer = store.write(move |w| w.create_peer(&p, "t")).await.unwrap();
        let gone = store.write(|w| w.delete_peer("laptop", "t")).await.unwrap();
        assert_eq!(gone, peer);
        store
            .read(|r| {
                assert_eq!(r.address(peer.address)?.status, Status::Available);
                assert_eq!(r.peer("laptop")?, None);
                assert_eq!(r.peer_count("node-a")?, 0);
                assert_eq!(r.peer_by_key(&key(1))?, None);
                assert_eq!(r.pool("peers-a")?.allocated, 0);
                Ok(())
            })
            .unwrap();
        let again = store.write(|w| w.delete_peer("laptop", "t")).await;
        assert!(matches!(again, Err(StoreError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_taken_name_or_key_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, true).await;
        let p = new_peer("laptop", "node-a", 1);
        store.write(move |w| w.create_peer(&p, "t")).await.unwrap();
        let same_name = new_peer("laptop", "node-b", 2);
        let e = store
            .write(move |w| w.create_peer(&same_name, "t"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::PeerNameTaken(_)), "{e}");
        let same_key = new_peer("phone", "node-a", 1);
        let e = store
            .write(move |w| w.create_peer(&same_key, "t"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::PeerKeyTaken { peer, .. } if peer == "laptop"),
            "{e}"
        );
        let bad = new_peer("no spaces", "node-a", 3);
        let e = store
            .write(move |w| w.create_peer(&bad, "t"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        store
            .read(|r| {
                assert_eq!(r.peers()?.len(), 1);
                assert_eq!(r.pool("peers-a")?.allocated, 1);
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn an_exhausted_pool_leaves_no_peer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, true).await;
        // A /29 holds 6 usable addresses, one of them the gateway.
        for i in 0..5u8 {
            let p = new_peer(&format!("p{i}"), "node-a", i);
            store.write(move |w| w.create_peer(&p, "t")).await.unwrap();
        }
        let p = new_peer("one-too-many", "node-a", 9);
        let e = store
            .write(move |w| w.create_peer(&p, "t"))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Exhausted(_)), "{e}");
        store
            .read(|r| {
                assert_eq!(r.peer("one-too-many")?, None);
                assert_eq!(r.peer_by_key(&key(9))?, None);
                assert_eq!(r.peer_count("node-a")?, 5);
                assert_eq!(
                    r.peer_counts()?,
                    BTreeMap::from([("node-a".to_string(), 5)])
                );
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn without_a_gateway_the_first_address_is_kept_for_the_interface() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, false).await;
        let p = new_peer("laptop", "node-a", 1);
        let peer = store.write(move |w| w.create_peer(&p, "t")).await.unwrap();
        assert_eq!(peer.address.to_string(), "10.8.0.2");
        store
            .read(|r| {
                let first = r.address("10.8.0.1".parse().unwrap())?;
                assert_eq!(first.status, Status::Allocated);
                assert_eq!(first.owner.as_deref(), Some("node:node-a"));
                assert_eq!(
                    r.peer_interface_address("peers-a")?.to_string(),
                    "10.8.0.1/29"
                );
                Ok(())
            })
            .unwrap();
        // A second peer leaves the interface's address as it is.
        let p = new_peer("phone", "node-a", 2);
        let peer = store.write(move |w| w.create_peer(&p, "t")).await.unwrap();
        assert_eq!(peer.address.to_string(), "10.8.0.3");
    }
}
