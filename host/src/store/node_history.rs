//! Each node's history: who registered or enrolled it, edited, enabled or disabled it, or
//! rotated its secret, and when. An event is appended by the change it records, in that
//! change's transaction, so a change and its event commit or vanish together. Events are kept
//! under `(node, sequence)`: one node's history is one range scan, however many events the
//! other nodes have. Deleting a node deletes its history.

use super::{Reader, Result, StoreError, WriteTables, Writer, decode, encode};
use serde::{Deserialize, Serialize};

/// What happened to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeAction {
    /// Registered by an operator (API, page): the actor is the token or user.
    Registered,
    /// Registered by its own agent with a join token (`weft agent join`): the actor is
    /// `join-token:<id>`.
    Enrolled {
        /// The join token's id (the first 12 hex digits of its secret's SHA-256).
        token: String,
        /// Who made the join token.
        token_created_by: String,
        /// The address the enrolling agent called from.
        from: String,
    },
    /// Its settings changed (agent URL, endpoint, port, pool, capacity, weight, labels).
    Edited,
    /// Switched on: polled, and chosen for peers, again.
    Enabled,
    /// Switched off: not polled, never chosen for peers.
    Disabled,
    /// Its shared secret was replaced.
    SecretRotated,
}

/// One entry of a node's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeEvent {
    #[schema(value_type = String)]
    pub at: jiff::Timestamp,
    /// The token or user that made the change (`join-token:<id>` for an enrolment).
    pub actor: String,
    pub action: NodeAction,
}

impl Reader {
    /// Node `node`'s history, oldest first; empty for a node that never existed.
    pub fn node_history(&self, node: &str) -> Result<Vec<NodeEvent>> {
        let mut out = Vec::new();
        for e in self.t.node_history()?.range((node, 0)..=(node, u64::MAX))? {
            out.push(decode("node_history", e?.1.value())?);
        }
        Ok(out)
    }
}

impl Writer<'_> {
    /// Appends `action` by `actor` to node `node`'s history, at this change's time. Call it
    /// from the change it records, so both are in one transaction. The node must exist: a
    /// history without its node could never be shown or deleted.
    pub fn record_node_event(&mut self, node: &str, actor: &str, action: NodeAction) -> Result<()> {
        if self.t.nodes.get(node)?.is_none() {
            return Err(StoreError::NotFound(format!("node {node:?}")));
        }
        // The last sequence of this node only: a reverse step into its own range.
        let last = match self
            .t
            .node_history
            .range((node, 0)..=(node, u64::MAX))?
            .next_back()
        {
            Some(e) => e?.0.value().1,
            None => 0,
        };
        let event = NodeEvent {
            at: self.now,
            actor: actor.to_string(),
            action,
        };
        self.t
            .node_history
            .insert((node, last + 1), encode(&event).as_slice())?;
        Ok(())
    }

    /// Forgets node `node`'s history (the node is being deleted).
    pub(super) fn delete_node_history(&mut self, node: &str) -> Result<()> {
        self.t
            .node_history
            .remove_range((node, 0)..=(node, u64::MAX))?;
        Ok(())
    }
}

/// Version 8: a history for each node registered before histories were kept (its
/// enrolment, as its join token recorded it, or else its registration), so no node starts
/// with an empty one. Nothing else of its past is known.
pub(super) fn backfill(t: &mut WriteTables<'_>) -> Result<()> {
    // (node, when) -> (token id, its creator, from where): an enrolment and the node's
    // creation are one transaction, so their times are equal.
    let mut enrolments = std::collections::HashMap::new();
    for e in t.join_tokens.iter()? {
        let token: super::JoinToken = decode("join_tokens", e?.1.value())?;
        for en in token.enrolled {
            enrolments.insert(
                (en.node, en.at),
                (token.id.clone(), token.created_by.clone(), en.from),
            );
        }
    }
    let mut events = Vec::new();
    for e in t.nodes.iter()? {
        let node: super::Node = decode("nodes", e?.1.value())?;
        let action = match enrolments.remove(&(node.name.clone(), node.created)) {
            Some((token, token_created_by, from)) => NodeAction::Enrolled {
                token,
                token_created_by,
                from,
            },
            None => NodeAction::Registered,
        };
        let event = NodeEvent {
            at: node.created,
            actor: node.created_by,
            action,
        };
        events.push((node.name, event));
    }
    for (name, event) in events {
        t.node_history
            .insert((name.as_str(), 1), encode(&event).as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::{META, NODE_HISTORY};
    use crate::store::{NodePatch, NodeSpec, PoolSpec, SealedSecret, Store};
    use std::time::Duration;

    fn spec(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            agent_url: "https://192.0.2.1:7443/".into(),
            endpoint_host: "192.0.2.1".into(),
            listen_port: 51820,
            peer_pool: "vpn".into(),
            max_peers: 250,
            weight: 1,
            labels: vec![],
            enabled: true,
        }
    }

    fn sealed() -> SealedSecret {
        SealedSecret {
            nonce: [0; 24],
            ciphertext: vec![1, 2, 3],
        }
    }

    /// A store in `dir` with pool `vpn`.
    async fn store_in(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("db.redb")).unwrap();
        let pool = PoolSpec {
            name: "vpn".into(),
            cidr: "10.8.0.0/24".parse().unwrap(),
            description: None,
            reserve_gateway: true,
            static_ranges: vec![],
        };
        store
            .write(move |w| w.create_pool(&pool, "t"))
            .await
            .unwrap();
        store
    }

    async fn register(store: &Store, name: &'static str, actor: &'static str) {
        store
            .write(move |w| w.create_node(&spec(name), sealed(), actor))
            .await
            .unwrap();
    }

    async fn update(store: &Store, name: &'static str, patch: NodePatch, actor: &'static str) {
        store
            .write(move |w| w.update_node(name, &patch, actor))
            .await
            .unwrap();
    }

    fn history(store: &Store, name: &str) -> Vec<(String, NodeAction)> {
        store
            .read(|r| r.node_history(name))
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.action))
            .collect()
    }

    fn by(actor: &str, action: NodeAction) -> (String, NodeAction) {
        (actor.to_string(), action)
    }

    #[tokio::test]
    async fn a_node_history_records_who_registered_edited_and_switched_it_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        register(&store, "n1", "ann").await;
        let weight = NodePatch {
            weight: Some(3),
            ..NodePatch::default()
        };
        update(&store, "n1", weight.clone(), "bob").await;
        // A save that changes nothing (the page sends every field) records nothing.
        update(&store, "n1", weight, "bob").await;
        let off = NodePatch {
            enabled: Some(false),
            ..NodePatch::default()
        };
        update(&store, "n1", off.clone(), "cy").await;
        update(&store, "n1", off, "cy").await;
        let on_and_edit = NodePatch {
            enabled: Some(true),
            max_peers: Some(10),
            ..NodePatch::default()
        };
        update(&store, "n1", on_and_edit, "dee").await;
        store
            .write(|w| w.record_node_event("n1", "ops", NodeAction::SecretRotated))
            .await
            .unwrap();
        assert_eq!(
            history(&store, "n1"),
            vec![
                by("ann", NodeAction::Registered),
                by("bob", NodeAction::Edited),
                by("cy", NodeAction::Disabled),
                by("dee", NodeAction::Edited),
                by("dee", NodeAction::Enabled),
                by("ops", NodeAction::SecretRotated),
            ]
        );
        let events = store.read(|r| r.node_history("n1")).unwrap();
        assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["action"], serde_json::json!({"kind": "registered"}));
    }

    #[tokio::test]
    async fn an_event_commits_or_vanishes_with_its_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        let failed = store
            .write(|w| {
                w.create_node(&spec("n1"), sealed(), "ann")?;
                Err::<(), _>(StoreError::Invalid("a later step failed".into()))
            })
            .await;
        assert!(failed.is_err());
        assert!(store.read(|r| r.node("n1")).unwrap().is_none());
        assert!(
            history(&store, "n1").is_empty(),
            "no event without its node"
        );
        // A refused edit records nothing either.
        register(&store, "n1", "ann").await;
        let bad = NodePatch {
            weight: Some(0),
            ..NodePatch::default()
        };
        let refused = store.write(move |w| w.update_node("n1", &bad, "bob")).await;
        assert!(matches!(refused, Err(StoreError::Invalid(_))));
        assert_eq!(
            history(&store, "n1"),
            vec![by("ann", NodeAction::Registered)]
        );
        let orphan = store
            .write(|w| w.record_node_event("ghost", "ops", NodeAction::Edited))
            .await;
        assert!(matches!(orphan, Err(StoreError::NotFound(_))));
    }

    #[tokio::test]
    async fn an_enrolment_records_the_token_its_creator_and_the_callers_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        let token = store
            .write(|w| w.create_join_token("wj_x", "vpn", &[], 1, Duration::from_secs(60), "ops"))
            .await
            .unwrap();
        store
            .write(|w| w.enrol_node("wj_x", &spec("n1"), sealed(), "198.51.100.7"))
            .await
            .unwrap()
            .unwrap();
        let events = store.read(|r| r.node_history("n1")).unwrap();
        assert_eq!(events.len(), 1, "one event: enrolled, not also registered");
        assert_eq!(events[0].actor, format!("join-token:{}", token.id));
        assert_eq!(
            events[0].action,
            NodeAction::Enrolled {
                token: token.id.clone(),
                token_created_by: "ops".into(),
                from: "198.51.100.7".into(),
            }
        );
        // A refused token leaves no history.
        let refused = store
            .write(|w| w.enrol_node("wj_x", &spec("n2"), sealed(), "198.51.100.8"))
            .await
            .unwrap();
        assert!(refused.is_err());
        assert!(history(&store, "n2").is_empty());
    }

    #[tokio::test]
    async fn deleting_a_node_deletes_its_history_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path()).await;
        // "n1" sorts right before "n10": their ranges must not run into each other.
        register(&store, "n1", "ann").await;
        register(&store, "n10", "bob").await;
        store.write(|w| w.delete_node("n1", "ann")).await.unwrap();
        assert!(history(&store, "n1").is_empty());
        assert_eq!(
            history(&store, "n10"),
            vec![by("bob", NodeAction::Registered)]
        );
        // The name again is a new node, with a history of its own.
        register(&store, "n1", "cy").await;
        assert_eq!(
            history(&store, "n1"),
            vec![by("cy", NodeAction::Registered)]
        );
    }

    #[tokio::test]
    async fn a_version_7_database_gets_each_nodes_registration_or_enrolment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = store_in(dir.path()).await;
        register(&store, "hand", "ann").await;
        let token = store
            .write(|w| w.create_join_token("wj_x", "vpn", &[], 1, Duration::from_secs(60), "ops"))
            .await
            .unwrap();
        store
            .write(|w| w.enrol_node("wj_x", &spec("auto"), sealed(), "198.51.100.7"))
            .await
            .unwrap()
            .unwrap();
        let created = store.read(|r| r.node("hand")).unwrap().unwrap().created;
        store.close();
        // Make it look like version 7: no node_history table.
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 7)
                .unwrap();
            txn.delete_table(NODE_HISTORY).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.read(|r| r.schema_version()).unwrap(),
            Some(crate::store::SCHEMA_VERSION)
        );
        let hand = store.read(|r| r.node_history("hand")).unwrap();
        assert_eq!(
            hand,
            vec![NodeEvent {
                at: created,
                actor: "ann".into(),
                action: NodeAction::Registered,
            }]
        );
        assert_eq!(
            history(&store, "auto"),
            vec![by(
                &format!("join-token:{}", token.id),
                NodeAction::Enrolled {
                    token: token.id.clone(),
                    token_created_by: "ops".into(),
                    from: "198.51.100.7".into(),
                }
            )]
        );
        // Later events follow the back-filled one.
        update(
            &store,
            "hand",
            NodePatch {
                weight: Some(2),
                ..NodePatch::default()
            },
            "bob",
        )
        .await;
        assert_eq!(
            history(&store, "hand"),
            vec![
                by("ann", NodeAction::Registered),
                by("bob", NodeAction::Edited)
            ]
        );
    }
}
