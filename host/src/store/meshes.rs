//! Meshes as stored: the desired state of each (members, their LAN subnets, topology, port,
//! keepalive, MTU) and its generation, bumped at every change. Creating or changing one gives
//! every member without an overlay address one from the overlay pool, in the same
//! transaction: if the pool runs out, the whole change fails and allocates nothing.

use super::nodes::node_owner;
use super::{Reader, Result, StoreError, Writer, encode, get_json};
use crate::agent_api::PublicKey;
use crate::mesh::rules::{self, MeshDraft};
use crate::mesh::{FIRST_MESH_PORT, Topology};
use ipnet::IpNet;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// One member of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeshMember {
    pub node: String,
    /// The subnets behind this node that the other members reach through it.
    #[schema(value_type = Vec<String>, example = json!(["192.168.10.0/24"]))]
    pub lan_subnets: Vec<IpNet>,
}

/// A mesh as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mesh {
    /// 16 lower-case hex digits; its interface on every member is `wg-` and the first 8.
    pub id: String,
    pub name: String,
    pub topology: Topology,
    /// Hub nodes (hub-and-spoke only).
    pub hubs: Vec<String>,
    pub members: Vec<MeshMember>,
    pub listen_port: u16,
    pub keepalive: u16,
    pub mtu: u16,
    /// Bumped at every change of the desired state.
    pub generation: u64,
    /// Applied at least once: from then on the controller keeps its members in step.
    pub applied: bool,
    pub created: jiff::Timestamp,
    pub created_by: String,
    pub updated: jiff::Timestamp,
}

impl Mesh {
    pub fn interface(&self) -> String {
        crate::agent_api::mesh_interface(&self.id)
    }

    pub fn is_hub(&self, node: &str) -> bool {
        self.topology == Topology::HubAndSpoke && self.hubs.iter().any(|h| h == node)
    }

    pub fn has_member(&self, node: &str) -> bool {
        self.members.iter().any(|m| m.node == node)
    }
}

fn find(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    names: &impl ReadableTable<&'static str, &'static str>,
    id_or_name: &str,
) -> Result<Mesh> {
    let id = match names.get(id_or_name)? {
        Some(id) => id.value().to_string(),
        None => id_or_name.to_string(),
    };
    get_json(table, "meshes", id.as_str())?
        .ok_or_else(|| StoreError::NotFound(format!("mesh {id_or_name:?}")))
}

impl Reader {
    /// A mesh by id or name.
    pub fn mesh(&self, id_or_name: &str) -> Result<Mesh> {
        find(self.t.meshes()?, self.t.mesh_names()?, id_or_name)
    }

    /// Every mesh, by name.
    pub fn meshes(&self) -> Result<Vec<Mesh>> {
        let mut out = Vec::new();
        for e in self.t.mesh_names()?.iter()? {
            let id = e?.1.value().to_string();
            if let Some(m) = get_json(self.t.meshes()?, "meshes", id.as_str())? {
                out.push(m);
            }
        }
        Ok(out)
    }
}

impl Writer<'_> {
    fn meshes_in_txn(&self) -> Result<Vec<Mesh>> {
        let mut out = Vec::new();
        for e in self.t.meshes.iter()? {
            out.push(super::decode("meshes", e?.1.value())?);
        }
        Ok(out)
    }

    /// The meshes node `name` is a member of.
    pub(crate) fn meshes_of(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .meshes_in_txn()?
            .into_iter()
            .filter(|m| m.has_member(name))
            .map(|m| m.name)
            .collect())
    }

    /// Checks a draft against the store, gives members their overlay addresses, and settles
    /// the mesh's port (the one asked for, the mesh's current one, or the first free one).
    fn admit(
        &mut self,
        draft: &MeshDraft,
        named_overlay: Option<&str>,
        this: Option<&Mesh>,
        actor: &str,
    ) -> Result<u16> {
        let Some(overlay) = self.overlay_pool_in_txn()? else {
            return Err(StoreError::NoOverlayPool);
        };
        rules::check(draft, overlay.cidr, named_overlay)?;
        let others: Vec<Mesh> = self
            .meshes_in_txn()?
            .into_iter()
            .filter(|m| Some(&m.id) != this.map(|t| &t.id))
            .collect();
        if let Some(m) = others.iter().find(|m| m.name == draft.name) {
            return Err(StoreError::MeshNameTaken(m.name.clone()));
        }
        let mut nodes = Vec::with_capacity(draft.members.len());
        for (name, _) in &draft.members {
            match self.node_in_txn(name)? {
                Some(n) => nodes.push(n),
                None => {
                    return Err(StoreError::Invalid(format!(
                        "members: there is no node named {name:?}"
                    )));
                }
            }
        }
        // Which node uses which port, and for what.
        let user = |port: u16| -> Option<String> {
            for n in &nodes {
                if n.listen_port == port {
                    return Some(format!("{port} is node {:?}'s peer port", n.name));
                }
                if let Some(m) = others
                    .iter()
                    .find(|m| m.listen_port == port && m.has_member(&n.name))
                {
                    return Some(format!(
                        "node {:?} already uses {port} for mesh {:?}",
                        n.name, m.name
                    ));
                }
            }
            None
        };
        let port = match draft.listen_port {
            Some(p) => {
                if let Some(why) = user(p) {
                    return Err(StoreError::Invalid(format!(
                        "listen_port: {why}; give the mesh another"
                    )));
                }
                p
            }
            None => {
                let current = this.map(|m| m.listen_port).filter(|&p| user(p).is_none());
                match current.or_else(|| (FIRST_MESH_PORT..=u16::MAX).find(|&p| user(p).is_none()))
                {
                    Some(p) => p,
                    None => {
                        return Err(StoreError::Invalid(
                            "listen_port: no free port left on these nodes".into(),
                        ));
                    }
                }
            }
        };
        for mut node in nodes {
            let has_overlay = node
                .overlay_address
                .is_some_and(|a| overlay.cidr.contains(&a));
            if !has_overlay {
                let req = super::AllocationRequest {
                    address: None,
                    owner: Some(node_owner(&node.name)),
                    hostname: Some(node.name.clone()),
                };
                node.overlay_address =
                    Some(self.allocate(&overlay.name, &req, None, actor)?.address);
                self.put_node_in_txn(&node)?;
            }
        }
        Ok(port)
    }

    fn new_mesh_id(&self) -> Result<String> {
        // Interfaces are named by the first 8 characters: those must be unique too.
        loop {
            let id = hex::encode(rand::random::<[u8; 8]>());
            let prefix = &id[..8];
            let clash = self
                .t
                .meshes
                .range(prefix..)?
                .next()
                .transpose()?
                .is_some_and(|(k, _)| k.value().starts_with(prefix));
            if !clash {
                return Ok(id);
            }
        }
    }

    fn put_mesh(&mut self, mesh: &Mesh) -> Result<()> {
        self.t
            .meshes
            .insert(mesh.id.as_str(), encode(mesh).as_slice())?;
        self.t
            .mesh_names
            .insert(mesh.name.as_str(), mesh.id.as_str())?;
        Ok(())
    }

    /// Creates a mesh (not yet applied).
    pub fn create_mesh(
        &mut self,
        draft: &MeshDraft,
        named_overlay: Option<&str>,
        actor: &str,
    ) -> Result<Mesh> {
        let listen_port = self.admit(draft, named_overlay, None, actor)?;
        let mesh = Mesh {
            id: self.new_mesh_id()?,
            name: draft.name.clone(),
            topology: draft.topology,
            hubs: draft.hubs.clone(),
            members: members(draft),
            listen_port,
            keepalive: draft.keepalive,
            mtu: draft.mtu,
            generation: 1,
            applied: false,
            created: self.now,
            created_by: actor.to_string(),
            updated: self.now,
        };
        self.put_mesh(&mesh)?;
        Ok(mesh)
    }

    /// Replaces a mesh's desired state (its id stays); bumps its generation.
    pub fn update_mesh(
        &mut self,
        id_or_name: &str,
        draft: &MeshDraft,
        named_overlay: Option<&str>,
        actor: &str,
    ) -> Result<Mesh> {
        let mut mesh = find(
            self.t.meshes.table()?,
            self.t.mesh_names.table()?,
            id_or_name,
        )?;
        let listen_port = self.admit(draft, named_overlay, Some(&mesh), actor)?;
        if mesh.name != draft.name {
            self.t.mesh_names.remove(mesh.name.as_str())?;
        }
        mesh.name = draft.name.clone();
        mesh.topology = draft.topology;
        mesh.hubs = draft.hubs.clone();
        mesh.members = members(draft);
        mesh.listen_port = listen_port;
        mesh.keepalive = draft.keepalive;
        mesh.mtu = draft.mtu;
        mesh.generation += 1;
        mesh.updated = self.now;
        self.put_mesh(&mesh)?;
        Ok(mesh)
    }

    /// Marks a mesh applied: the controller keeps its members in step from now on.
    pub fn mark_mesh_applied(&mut self, id_or_name: &str) -> Result<Mesh> {
        let mut mesh = find(
            self.t.meshes.table()?,
            self.t.mesh_names.table()?,
            id_or_name,
        )?;
        if !mesh.applied {
            mesh.applied = true;
            self.put_mesh(&mesh)?;
        }
        Ok(mesh)
    }

    /// Deletes a mesh. Its members keep their overlay addresses.
    pub fn delete_mesh(&mut self, id_or_name: &str) -> Result<Mesh> {
        let mesh = find(
            self.t.meshes.table()?,
            self.t.mesh_names.table()?,
            id_or_name,
        )?;
        self.t.meshes.remove(mesh.id.as_str())?;
        self.t.mesh_names.remove(mesh.name.as_str())?;
        Ok(mesh)
    }

    /// Records a node's mesh key, as its agent reported it.
    pub fn set_node_mesh_key(&mut self, name: &str, key: PublicKey) -> Result<()> {
        if let Some(mut node) = self.node_in_txn(name)?
            && node.mesh_key != Some(key)
        {
            node.mesh_key = Some(key);
            self.put_node_in_txn(&node)?;
        }
        Ok(())
    }
}

fn members(draft: &MeshDraft) -> Vec<MeshMember> {
    draft
        .members
        .iter()
        .map(|(node, lan)| MeshMember {
            node: node.clone(),
            lan_subnets: lan.clone(),
        })
        .collect()
}

impl From<rules::MeshRuleError> for StoreError {
    fn from(e: rules::MeshRuleError) -> Self {
        StoreError::Invalid(e.to_string())
    }
}
