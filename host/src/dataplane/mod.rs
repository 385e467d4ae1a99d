//! The node's WireGuard data plane: interfaces built into the agent's process (`device`:
//! TUN + UDP + boringtun's `Tunn` per peer), their keys (`keys`), addresses over netlink
//! (`netlink`), the `wg`-compatible UAPI socket (`uapi`), and the desired state kept in the
//! data dir (`state`) so the agent restores it alone after a restart or crash.
//!
//! Every change is applied first, then saved: what is saved always ran once.

pub mod device;
pub mod engine;
mod gso;
pub mod keys;
pub mod netlink;
pub mod state;
pub mod uapi;

use crate::agent_api::{
    InterfaceDump, InterfaceSpec, InterfaceSummary, MeshList, MeshSpec, MeshStatus, PeerDump,
    PeerSpec, PublicKey, WgDump,
};
use device::Device;
use keys::KeyPair;
use state::{InterfaceState, MeshState, State};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error("interface {0} does not exist yet: PUT /v1/interface first")]
    NoInterface(String),
    #[error("allowed IP {net} overlaps {other} of peer {peer}")]
    Overlap {
        net: ipnet::IpNet,
        other: ipnet::IpNet,
        peer: PublicKey,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("mesh {id} is at generation {applied}; generation {asked} is older")]
    Stale {
        id: String,
        applied: u64,
        asked: u64,
    },
    #[error("interface {0} already holds its maximum of peers")]
    Full(String),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("IP forwarding: {0}")]
    Forwarding(std::io::Error),
    #[error("UAPI socket for {iface}: {source}")]
    Uapi {
        iface: String,
        source: std::io::Error,
    },
}

/// The name of the key file shared by mesh interfaces (no interface name starts with a dot).
const MESH_KEY: &str = ".mesh";

/// A running interface and what serves its UAPI socket.
struct Running {
    device: Device,
    _uapi: uapi::Server,
}

struct Inner {
    state: State,
    running: HashMap<String, Running>,
}

/// The data plane of one agent.
pub struct DataPlane {
    dir: PathBuf,
    /// The name of the node's peer interface.
    peer_interface: String,
    /// Where the UAPI sockets go (`/var/run/wireguard`, where `wg` looks).
    uapi_dir: PathBuf,
    /// The key every mesh interface of this node uses (`keys/.mesh.key`): the controller
    /// learns it once and can configure a member's peers before that member runs the mesh.
    mesh_keys: KeyPair,
    /// Whether interfaces use the kernel's TUN and UDP offloads (on unless turned off).
    offload: std::sync::atomic::AtomicBool,
    inner: tokio::sync::Mutex<Inner>,
    me: Weak<DataPlane>,
}

impl DataPlane {
    /// A data plane whose state lives in `dir`. Nothing runs until [`DataPlane::restore`] or
    /// the first `put_interface`, so an agent never asked for an interface needs no root.
    pub fn open(dir: PathBuf, peer_interface: String) -> Result<Arc<DataPlane>, PlaneError> {
        Self::open_with(dir, peer_interface, PathBuf::from(uapi::SOCKET_DIR))
    }

    /// [`DataPlane::open`] with the UAPI sockets in `uapi_dir` (several agents on one
    /// machine, as in tests, would otherwise share `/var/run/wireguard`).
    pub fn open_with(
        dir: PathBuf,
        peer_interface: String,
        uapi_dir: PathBuf,
    ) -> Result<Arc<DataPlane>, PlaneError> {
        // Linux interface names: at most 15 bytes; these characters keep the UAPI path sane.
        let ok = !peer_interface.is_empty()
            && peer_interface.len() <= 15
            && peer_interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !peer_interface.starts_with('.');
        if !ok {
            return Err(PlaneError::Invalid(format!(
                "interface name {peer_interface:?} must be 1 to 15 of A-Z a-z 0-9 _ - ."
            )));
        }
        if peer_interface.starts_with(crate::agent_api::MESH_INTERFACE_PREFIX) {
            return Err(PlaneError::Invalid(format!(
                "interface name {peer_interface:?}: names starting with {:?} are for meshes",
                crate::agent_api::MESH_INTERFACE_PREFIX
            )));
        }
        let state = State::load(&dir)?;
        let mesh_keys = keys::load_or_create(&dir, MESH_KEY)?;
        Ok(Arc::new_cyclic(|me| DataPlane {
            dir,
            peer_interface,
            uapi_dir,
            mesh_keys,
            offload: std::sync::atomic::AtomicBool::new(true),
            inner: tokio::sync::Mutex::new(Inner {
                state,
                running: HashMap::new(),
            }),
            me: me.clone(),
        }))
    }

    /// Turns the kernel offloads on or off for interfaces started from now on.
    pub fn set_offload(&self, on: bool) {
        self.offload.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn peer_interface(&self) -> &str {
        &self.peer_interface
    }

    /// Brings back every saved interface and its peers. One that fails is logged and left;
    /// the others still come up.
    pub async fn restore(&self) {
        let mut inner = self.inner.lock().await;
        let saved = inner.state.interfaces.clone();
        for iface in saved {
            match self.start_saved(&mut inner, &iface).await {
                Ok(()) => {
                    tracing::info!(iface = %iface.name, peers = iface.peers.len(), "interface restored")
                }
                Err(e) => {
                    tracing::error!(iface = %iface.name, error = %e, "cannot restore interface")
                }
            }
        }
        let meshes = inner.state.meshes.clone();
        for mesh in meshes {
            match self.apply_mesh(&mut inner, &mesh.spec, None).await {
                Ok(()) => {
                    tracing::info!(mesh = %mesh.id, iface = %mesh.spec.interface, generation = mesh.spec.generation, "mesh restored")
                }
                Err(e) => tracing::error!(mesh = %mesh.id, error = %e, "cannot restore mesh"),
            }
        }
    }

    /// Starts a saved interface with its peers.
    async fn start_saved(
        &self,
        inner: &mut Inner,
        iface: &InterfaceState,
    ) -> Result<(), PlaneError> {
        let running = self.start(&iface.name, &iface.spec).await?;
        for p in &iface.peers {
            running.device.engine().set_peer(p);
        }
        inner.running.insert(iface.name.clone(), running);
        Ok(())
    }

    /// Starts again an interface whose TUN went away under it (an `ip link del`, say): from
    /// its saved state, with its key, address and peers, or as its mesh. Only if the device
    /// running under that name is still the one that lost its TUN.
    async fn revive(&self, name: &str) {
        let mut inner = self.inner.lock().await;
        if !inner.running.get(name).is_some_and(|r| r.device.is_gone()) {
            return;
        }
        tracing::warn!(
            iface = name,
            "the interface's TUN is gone (deleted from outside?): starting it again"
        );
        inner.running.remove(name);
        let saved = inner.state.interface(name).cloned();
        let mesh = inner
            .state
            .meshes
            .iter()
            .find(|m| m.spec.interface == name)
            .map(|m| m.spec.clone());
        let started = match (saved, mesh) {
            (Some(iface), _) => self.start_saved(&mut inner, &iface).await,
            (None, Some(mesh)) => self.apply_mesh(&mut inner, &mesh, None).await,
            (None, None) => return,
        };
        match started {
            Ok(()) => tracing::info!(iface = name, "interface started again"),
            Err(e) => tracing::error!(iface = name, error = %e, "cannot start the interface again"),
        }
    }

    /// [`DataPlane::revive`] as a future of a named type: the watcher that calls it is
    /// spawned from inside the start it would run again.
    fn revive_boxed(
        self: Arc<Self>,
        name: String,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { self.revive(&name).await })
    }

    async fn start(&self, name: &str, spec: &InterfaceSpec) -> Result<Running, PlaneError> {
        let keys = keys::load_or_create(&self.dir, name)?;
        self.start_with(name, keys, spec.listen_port, spec.address, engine::MTU)
            .await
    }

    async fn start_with(
        &self,
        name: &str,
        keys: KeyPair,
        listen_port: u16,
        address: ipnet::IpNet,
        mtu: u16,
    ) -> Result<Running, PlaneError> {
        let offload = self.offload.load(std::sync::atomic::Ordering::Relaxed);
        let device = Device::start(name, keys, listen_port, offload)?;
        netlink::configure(name, address, u32::from(mtu)).await?;
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| PlaneError::Invalid("shutting down".into()))?;
        let uapi =
            uapi::serve(me.clone(), &self.uapi_dir, name).map_err(|source| PlaneError::Uapi {
                iface: name.to_string(),
                source,
            })?;
        // Watches for the TUN going away; ends with the device otherwise.
        let mut gone = device.gone();
        let (plane, iface) = (Arc::downgrade(&me), name.to_string());
        tokio::spawn(async move {
            if gone.wait_for(|g| *g).await.is_ok()
                && let Some(plane) = plane.upgrade()
            {
                plane.revive_boxed(iface).await;
            }
        });
        Ok(Running {
            device,
            _uapi: uapi,
        })
    }

    /// `PUT /v1/interface`: creates the peer interface (its key made on first use), or
    /// changes its address or port keeping key and peers. The same spec twice changes nothing.
    pub async fn put_interface(
        &self,
        spec: &InterfaceSpec,
    ) -> Result<InterfaceSummary, PlaneError> {
        spec.validate().map_err(PlaneError::Invalid)?;
        let name = self.peer_interface.clone();
        let mut inner = self.inner.lock().await;
        let same = inner.state.interface(&name).map(|i| &i.spec) == Some(spec);
        if !(same && inner.running.contains_key(&name)) {
            let port_same = inner
                .running
                .get(&name)
                .is_some_and(|r| r.device.listen_port() == spec.listen_port);
            if port_same {
                netlink::configure(&name, spec.address, u32::from(engine::MTU)).await?;
            } else {
                // A new port needs a new socket: restart the device with its peers.
                inner.running.remove(&name);
                let running = self.start(&name, spec).await?;
                if let Some(saved) = inner.state.interface(&name) {
                    for p in &saved.peers {
                        running.device.engine().set_peer(p);
                    }
                }
                inner.running.insert(name.clone(), running);
            }
            match inner.state.interface_mut(&name) {
                Some(i) => i.spec = spec.clone(),
                None => inner.state.interfaces.push(InterfaceState {
                    name: name.clone(),
                    spec: spec.clone(),
                    peers: Vec::new(),
                }),
            }
            inner.state.save(&self.dir)?;
        }
        Ok(summary(&inner, &name))
    }

    /// `POST /v1/peers`: adds a peer to the peer interface (true), or finds it already there
    /// as asked (false), or replaces its settings (true).
    pub async fn add_peer(&self, spec: &PeerSpec) -> Result<(PeerDump, bool), PlaneError> {
        spec.validate().map_err(PlaneError::Invalid)?;
        let name = self.peer_interface.clone();
        let mut inner = self.inner.lock().await;
        let changed = self.set_peer_locked(&mut inner, &name, spec)?;
        if changed {
            inner.state.save(&self.dir)?;
        }
        let dump = inner
            .running
            .get(&name)
            .and_then(|r| {
                r.device
                    .engine()
                    .dump()
                    .into_iter()
                    .find(|p| p.public_key == spec.public_key)
            })
            .ok_or_else(|| PlaneError::NoInterface(name.clone()))?;
        Ok((dump, changed))
    }

    fn set_peer_locked(
        &self,
        inner: &mut Inner,
        name: &str,
        spec: &PeerSpec,
    ) -> Result<bool, PlaneError> {
        let Some(saved) = inner.state.interface(name) else {
            return Err(PlaneError::NoInterface(name.to_string()));
        };
        if saved.peers.iter().any(|p| p == spec) {
            return Ok(false);
        }
        for other in saved
            .peers
            .iter()
            .filter(|p| p.public_key != spec.public_key)
        {
            for net in &spec.allowed_ips {
                if let Some(o) = other
                    .allowed_ips
                    .iter()
                    .find(|o| o.contains(net) || net.contains(*o))
                {
                    return Err(PlaneError::Overlap {
                        net: *net,
                        other: *o,
                        peer: other.public_key,
                    });
                }
            }
        }
        if saved.peers.len() >= crate::agent_api::MAX_PEERS
            && !saved.peers.iter().any(|p| p.public_key == spec.public_key)
        {
            return Err(PlaneError::Full(name.to_string()));
        }
        let running = inner
            .running
            .get(name)
            .ok_or_else(|| PlaneError::NoInterface(name.to_string()))?;
        running.device.engine().set_peer(spec);
        if let Some(i) = inner.state.interface_mut(name) {
            match i.peers.iter_mut().find(|p| p.public_key == spec.public_key) {
                Some(p) => *p = spec.clone(),
                None => i.peers.push(spec.clone()),
            }
        }
        Ok(true)
    }

    /// `DELETE /v1/peers/{hex}`: false if the interface has no such peer.
    pub async fn remove_peer(&self, key: &PublicKey) -> Result<bool, PlaneError> {
        let name = self.peer_interface.clone();
        let mut inner = self.inner.lock().await;
        let removed = self.remove_peer_locked(&mut inner, &name, key);
        if removed {
            inner.state.save(&self.dir)?;
        }
        Ok(removed)
    }

    fn remove_peer_locked(&self, inner: &mut Inner, name: &str, key: &PublicKey) -> bool {
        if let Some(r) = inner.running.get(name) {
            r.device.engine().remove_peer(key);
        }
        match inner.state.interface_mut(name) {
            Some(i) => {
                let before = i.peers.len();
                i.peers.retain(|p| p.public_key != *key);
                i.peers.len() != before
            }
            None => false,
        }
    }

    /// Every running interface, for `GET /v1/health`.
    pub async fn summaries(&self) -> Vec<InterfaceSummary> {
        let inner = self.inner.lock().await;
        let mut names: Vec<&String> = inner.running.keys().collect();
        names.sort();
        names.into_iter().map(|n| summary(&inner, n)).collect()
    }

    /// `GET /v1/wg`.
    pub async fn dump(&self) -> WgDump {
        let inner = self.inner.lock().await;
        let mut interfaces: Vec<InterfaceDump> = inner
            .running
            .iter()
            .map(|(name, r)| InterfaceDump {
                name: name.clone(),
                public_key: r.device.engine().public_key(),
                listen_port: r.device.listen_port(),
                peers: r.device.engine().dump(),
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        WgDump { interfaces }
    }

    /// The UAPI's `get=1` for `iface`.
    pub async fn uapi_get(&self, iface: &str) -> String {
        let inner = self.inner.lock().await;
        let Some(r) = inner.running.get(iface) else {
            return "errno=19\n\n".into();
        };
        let times = r.device.engine().handshake_times();
        let peers: Vec<uapi::PeerInfo> = r
            .device
            .engine()
            .dump()
            .into_iter()
            .map(|p| uapi::PeerInfo {
                last_handshake: times.get(&p.public_key).copied().flatten(),
                key: p.public_key,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
                rx: p.rx_bytes,
                tx: p.tx_bytes,
                keepalive: p.persistent_keepalive,
            })
            .collect();
        uapi::format_get(
            &r.device.engine().private_key_bytes(),
            r.device.listen_port(),
            &peers,
        )
    }

    /// The UAPI's `set=1` for `iface`: peer changes, saved like the controller's. Its errno.
    pub async fn uapi_set(&self, iface: &str, req: uapi::SetRequest) -> i32 {
        let mut inner = self.inner.lock().await;
        if !inner.running.contains_key(iface) {
            return 19; // ENODEV
        }
        if inner.state.interface(iface).is_none() {
            // A mesh's interface: its peers are the controller's, and a change made here
            // would be undone by the next apply (`wg set` says "Operation not permitted").
            tracing::info!(
                iface,
                "UAPI set refused: the controller sets a mesh's peers"
            );
            return 1; // EPERM
        }
        if req.replace_peers {
            let keys: Vec<PublicKey> = inner
                .state
                .interface(iface)
                .map(|i| i.peers.iter().map(|p| p.public_key).collect())
                .unwrap_or_default();
            for k in keys {
                self.remove_peer_locked(&mut inner, iface, &k);
            }
        }
        for change in req.peers {
            if change.remove {
                self.remove_peer_locked(&mut inner, iface, &change.key);
                continue;
            }
            let current = inner
                .state
                .interface(iface)
                .and_then(|i| i.peers.iter().find(|p| p.public_key == change.key).cloned());
            let mut spec = current.unwrap_or(PeerSpec {
                public_key: change.key,
                allowed_ips: Vec::new(),
                persistent_keepalive: None,
            });
            if change.replace_allowed_ips {
                spec.allowed_ips.clear();
            }
            spec.allowed_ips.extend(change.allowed_ips);
            if change.keepalive.is_some() {
                spec.persistent_keepalive = change.keepalive;
            }
            if let Err(e) = self.set_peer_locked(&mut inner, iface, &spec) {
                tracing::debug!(iface, error = %e, "UAPI set refused");
                return 22; // EINVAL
            }
            if let (Some(ep), Some(r)) = (change.endpoint, inner.running.get(iface)) {
                r.device.engine().set_endpoint(&change.key, ep);
            }
        }
        match inner.state.save(&self.dir) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(iface, error = %e, "UAPI change not saved");
                5 // EIO
            }
        }
    }
}

impl DataPlane {
    /// The public half of the node's mesh key.
    pub fn mesh_key(&self) -> PublicKey {
        PublicKey(*self.mesh_keys.public.as_bytes())
    }

    /// `PUT /v1/meshes/{id}`: makes the mesh's interface exactly `spec` (true), or finds it
    /// so already (false). An older generation than the applied one is refused.
    pub async fn put_mesh(
        &self,
        id: &str,
        spec: &MeshSpec,
    ) -> Result<(MeshStatus, bool), PlaneError> {
        if !crate::agent_api::valid_mesh_id(id) {
            return Err(PlaneError::Invalid(format!(
                "mesh id {id:?} must be 1 to 64 of a-z 0-9"
            )));
        }
        spec.validate().map_err(PlaneError::Invalid)?;
        if spec.interface == self.peer_interface {
            return Err(PlaneError::Invalid(format!(
                "interface {} is the peer interface",
                spec.interface
            )));
        }
        let mut inner = self.inner.lock().await;
        if let Some(m) = inner
            .state
            .meshes
            .iter()
            .find(|m| m.id != id && m.spec.interface == spec.interface)
        {
            return Err(PlaneError::Invalid(format!(
                "interface {} is mesh {}'s",
                spec.interface, m.id
            )));
        }
        let old = inner.state.mesh(id).cloned();
        if let Some(old) = &old {
            if spec.generation < old.spec.generation {
                return Err(PlaneError::Stale {
                    id: id.to_string(),
                    applied: old.spec.generation,
                    asked: spec.generation,
                });
            }
            if old.spec == *spec && in_sync(&inner, &old.spec) {
                return Ok((mesh_status(&inner, old), false));
            }
        }
        self.apply_mesh(&mut inner, spec, old.as_ref().map(|o| &o.spec))
            .await?;
        let saved = MeshState {
            id: id.to_string(),
            spec: spec.clone(),
        };
        match inner.state.meshes.iter_mut().find(|m| m.id == id) {
            Some(m) => *m = saved.clone(),
            None => inner.state.meshes.push(saved.clone()),
        }
        inner.state.save(&self.dir)?;
        Ok((mesh_status(&inner, &saved), true))
    }

    /// Brings the running interface to `spec`: the device (restarted when its port or name
    /// changed), address and MTU, peers (and no others), endpoints, routes, forwarding.
    async fn apply_mesh(
        &self,
        inner: &mut Inner,
        spec: &MeshSpec,
        old: Option<&MeshSpec>,
    ) -> Result<(), PlaneError> {
        let iface = spec.interface.as_str();
        if let Some(old) = old
            && old.interface != spec.interface
        {
            inner.running.remove(&old.interface);
        }
        let restart = inner
            .running
            .get(iface)
            .is_none_or(|r| r.device.listen_port() != spec.listen_port);
        if restart {
            inner.running.remove(iface);
            let running = self
                .start_with(
                    iface,
                    self.mesh_keys.clone(),
                    spec.listen_port,
                    spec.address,
                    spec.mtu,
                )
                .await?;
            inner.running.insert(iface.to_string(), running);
        } else {
            netlink::configure(iface, spec.address, u32::from(spec.mtu)).await?;
        }
        let device = &inner
            .running
            .get(iface)
            .ok_or_else(|| PlaneError::NoInterface(iface.to_string()))?
            .device;
        let wanted: HashSet<PublicKey> = spec.peers.iter().map(|p| p.public_key).collect();
        for p in device.engine().dump() {
            if !wanted.contains(&p.public_key) {
                device.engine().remove_peer(&p.public_key);
            }
        }
        let current: HashMap<PublicKey, Option<std::net::SocketAddr>> = device
            .engine()
            .dump()
            .into_iter()
            .map(|p| (p.public_key, p.endpoint))
            .collect();
        for (peer, spec_peer) in spec.peer_specs().zip(&spec.peers) {
            device.engine().set_peer(&peer);
            let was = old.and_then(|o| o.peers.iter().find(|p| p.public_key == peer.public_key));
            let endpoint_changed = was.map(|w| &w.endpoint) != Some(&spec_peer.endpoint);
            let unknown = current.get(&peer.public_key).copied().flatten().is_none();
            if let Some(ep) = &spec_peer.endpoint
                && (endpoint_changed || unknown)
            {
                match tokio::net::lookup_host(ep.as_ref())
                    .await
                    .map(|mut a| a.next())
                {
                    Ok(Some(addr)) => device.engine().set_endpoint(&peer.public_key, addr),
                    Ok(None) | Err(_) => {
                        tracing::warn!(iface, endpoint = %ep, "cannot resolve a mesh peer's endpoint; waiting for it to call")
                    }
                }
            }
        }
        let routes: Vec<ipnet::IpNet> = spec
            .peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .collect();
        netlink::set_routes(iface, &routes).await?;
        if spec.forward {
            let v4 = spec.address.addr().is_ipv4() || routes.iter().any(|n| n.addr().is_ipv4());
            let v6 = spec.address.addr().is_ipv6() || routes.iter().any(|n| n.addr().is_ipv6());
            netlink::enable_forwarding(v4, v6).map_err(PlaneError::Forwarding)?;
        }
        Ok(())
    }

    /// `DELETE /v1/meshes/{id}`: stops the mesh's interface (the kernel drops its address and
    /// routes with it). False if the node has no such mesh.
    pub async fn delete_mesh(&self, id: &str) -> Result<bool, PlaneError> {
        let mut inner = self.inner.lock().await;
        let Some(pos) = inner.state.meshes.iter().position(|m| m.id == id) else {
            return Ok(false);
        };
        let gone = inner.state.meshes.remove(pos);
        inner.running.remove(&gone.spec.interface);
        inner.state.save(&self.dir)?;
        Ok(true)
    }

    /// `GET /v1/meshes`.
    pub async fn meshes(&self) -> MeshList {
        let inner = self.inner.lock().await;
        MeshList {
            mesh_key: self.mesh_key(),
            meshes: inner
                .state
                .meshes
                .iter()
                .map(|m| mesh_status(&inner, m))
                .collect(),
        }
    }
}

/// Whether the running interface has exactly the peers and allowed IPs of `spec`.
fn in_sync(inner: &Inner, spec: &MeshSpec) -> bool {
    let Some(r) = inner.running.get(&spec.interface) else {
        return false;
    };
    let running: HashMap<PublicKey, HashSet<ipnet::IpNet>> = r
        .device
        .engine()
        .dump()
        .into_iter()
        .map(|p| (p.public_key, p.allowed_ips.into_iter().collect()))
        .collect();
    running.len() == spec.peers.len()
        && spec.peers.iter().all(|p| {
            running.get(&p.public_key).is_some_and(|ips| {
                ips.len() == p.allowed_ips.len() && p.allowed_ips.iter().all(|n| ips.contains(n))
            })
        })
}

fn mesh_status(inner: &Inner, m: &MeshState) -> MeshStatus {
    MeshStatus {
        id: m.id.clone(),
        generation: m.spec.generation,
        digest: m.spec.digest(),
        interface: m.spec.interface.clone(),
        in_sync: in_sync(inner, &m.spec),
        peers: inner
            .running
            .get(&m.spec.interface)
            .map(|r| r.device.engine().dump())
            .unwrap_or_default(),
    }
}

fn summary(inner: &Inner, name: &str) -> InterfaceSummary {
    let running = inner.running.get(name);
    InterfaceSummary {
        name: name.to_string(),
        public_key: running.map_or(PublicKey([0; 32]), |r| r.device.engine().public_key()),
        listen_port: running.map_or(0, |r| r.device.listen_port()),
        address: inner.state.interface(name).map(|i| i.spec.address),
        peers: running.map_or(0, |r| r.device.engine().peer_count() as u32),
    }
}
