//! Join tokens: one-time (or few-times) keys that enrol a node. Stored only as the SHA-256 of
//! their secret, with what they enrol (peer pool, labels), how many uses they have left,
//! until when, and who used them from where. Redeeming one and registering the node is one
//! transaction: a token that is unknown, used up, expired or revoked changes nothing.

use super::{Reader, Result, StoreError, Writer, decode, encode};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One enrolment a token made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    pub node: String,
    pub at: jiff::Timestamp,
    /// The address the enrolling agent called from.
    pub from: String,
}

/// A join token as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The first 12 hex digits of the secret's SHA-256: how lists and `revoke` name it.
    pub id: String,
    /// The peer pool (id) nodes it enrols take their peers' addresses from.
    pub peer_pool: u64,
    pub labels: Vec<(String, String)>,
    pub uses: u32,
    pub expires: jiff::Timestamp,
    pub revoked: bool,
    pub created: jiff::Timestamp,
    pub created_by: String,
    pub enrolled: Vec<Enrolment>,
}

/// Why a join token was refused. The message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    #[error("unknown join token")]
    Unknown,
    #[error("join token {id} is used up ({uses} of {uses} uses)")]
    UsedUp { id: String, uses: u32 },
    #[error("join token {id} expired at {at}")]
    Expired { id: String, at: jiff::Timestamp },
    #[error("join token {id} was revoked")]
    Revoked { id: String },
}

/// A new join token's secret: `wj_` and 256 random bits in hex.
pub fn new_join_secret() -> String {
    format!("wj_{}", hex::encode(rand::random::<[u8; 32]>()))
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Reader {
    /// Every join token, newest first.
    pub fn join_tokens(&self) -> Result<Vec<JoinToken>> {
        let mut out: Vec<JoinToken> = Vec::new();
        for e in self.t.join_tokens()?.iter()? {
            out.push(decode("join_tokens", e?.1.value())?);
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.created));
        Ok(out)
    }
}

impl Writer<'_> {
    /// Stores a new join token for `secret`.
    pub fn create_join_token(
        &mut self,
        secret: &str,
        peer_pool: &str,
        labels: &[(String, String)],
        uses: u32,
        valid_for: std::time::Duration,
        actor: &str,
    ) -> Result<JoinToken> {
        if uses == 0 {
            return Err(StoreError::Invalid("uses: at least 1".into()));
        }
        super::nodes::check_labels(labels)?;
        let pool = self.pool(peer_pool)?;
        let expires = jiff::SignedDuration::try_from(valid_for)
            .ok()
            .and_then(|d| self.now.checked_add(d).ok())
            .ok_or_else(|| StoreError::Invalid("expires: too far in the future".into()))?;
        let hash = digest(secret);
        let token = JoinToken {
            id: hex::encode(&hash[..6]),
            peer_pool: pool.id,
            labels: labels.to_vec(),
            uses,
            expires,
            revoked: false,
            created: self.now,
            created_by: actor.to_string(),
            enrolled: Vec::new(),
        };
        self.t
            .join_tokens
            .insert(hash.as_slice(), encode(&token).as_slice())?;
        Ok(token)
    }

    /// Revokes the join token whose id is `id`.
    pub fn revoke_join_token(&mut self, id: &str) -> Result<JoinToken> {
        let mut found = None;
        for e in self.t.join_tokens.iter()? {
            let (k, v) = e?;
            let t: JoinToken = decode("join_tokens", v.value())?;
            if t.id == id {
                found = Some((k.value().to_vec(), t));
                break;
            }
        }
        let (hash, mut token) =
            found.ok_or_else(|| StoreError::NotFound(format!("join token {id:?}")))?;
        token.revoked = true;
        self.t
            .join_tokens
            .insert(hash.as_slice(), encode(&token).as_slice())?;
        Ok(token)
    }

    /// Redeems `secret` for the node `spec` (its peer pool and labels come from the token)
    /// and registers it: one use of the token, recorded with `from` on the token and as the
    /// node's first event (`Enrolled`, with the token's creator).
    pub fn enrol_node(
        &mut self,
        secret: &str,
        spec: &super::NodeSpec,
        sealed: super::SealedSecret,
        from: &str,
    ) -> Result<std::result::Result<super::Node, JoinRefused>> {
        let hash = digest(secret);
        let Some(mut token) = self
            .t
            .join_tokens
            .get(hash.as_slice())?
            .map(|g| decode::<JoinToken>("join_tokens", g.value()))
            .transpose()?
        else {
            return Ok(Err(JoinRefused::Unknown));
        };
        let id = token.id.clone();
        if token.revoked {
            return Ok(Err(JoinRefused::Revoked { id }));
        }
        if token.enrolled.len() >= token.uses as usize {
            return Ok(Err(JoinRefused::UsedUp {
                id,
                uses: token.uses,
            }));
        }
        if self.now >= token.expires {
            return Ok(Err(JoinRefused::Expired {
                id,
                at: token.expires,
            }));
        }
        let mut spec = spec.clone();
        spec.peer_pool = token.peer_pool.to_string();
        spec.labels = token.labels.clone();
        let actor = format!("join-token:{id}");
        let node = self.insert_node(&spec, sealed, &actor)?;
        let action = super::NodeAction::Enrolled {
            token: id,
            token_created_by: token.created_by.clone(),
            from: from.to_string(),
        };
        self.record_node_event(&node.name, &actor, action)?;
        token.enrolled.push(Enrolment {
            node: node.name.clone(),
            at: self.now,
            from: from.to_string(),
        });
        self.t
            .join_tokens
            .insert(hash.as_slice(), encode(&token).as_slice())?;
        Ok(Ok(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NodeSpec, PoolSpec, SealedSecret, Store};
    use std::time::Duration;

    fn spec(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            agent_url: "https://192.0.2.1:7443/".into(),
            endpoint_host: "192.0.2.1".into(),
            listen_port: 51820,
            peer_pool: "ignored".into(),
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

    #[tokio::test]
    async fn a_token_enrols_as_many_nodes_as_its_uses_until_it_expires_or_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
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
        let labels = vec![("region".to_string(), "eu".to_string())];
        let t = store
            .write(move |w| {
                w.create_join_token(
                    "wj_one",
                    "vpn",
                    &labels,
                    1,
                    Duration::from_secs(3600),
                    "ops",
                )
            })
            .await
            .unwrap();
        assert_eq!(t.id.len(), 12);
        let enrol = |secret: &'static str, name: &'static str| {
            let store = store.clone();
            async move {
                store
                    .write(move |w| w.enrol_node(secret, &spec(name), sealed(), "192.0.2.1"))
                    .await
                    .unwrap()
            }
        };
        let node = enrol("wj_one", "n1").await.unwrap();
        assert_eq!(node.labels, vec![("region".into(), "eu".into())]);
        assert_eq!(node.created_by, format!("join-token:{}", t.id));
        let again = enrol("wj_one", "n2").await.unwrap_err();
        assert_eq!(
            again.to_string(),
            format!("join token {} is used up (1 of 1 uses)", t.id)
        );
        assert_eq!(
            enrol("wj_forged", "n2").await.unwrap_err(),
            JoinRefused::Unknown
        );
        assert!(
            store.read(|r| r.node("n2")).unwrap().is_none(),
            "nothing changed"
        );

        store
            .write(|w| w.create_join_token("wj_old", "vpn", &[], 5, Duration::ZERO, "ops"))
            .await
            .unwrap();
        assert!(matches!(
            enrol("wj_old", "n3").await,
            Err(JoinRefused::Expired { .. })
        ));
        let t = store
            .write(|w| w.create_join_token("wj_rev", "vpn", &[], 5, Duration::from_secs(60), "ops"))
            .await
            .unwrap();
        let id = t.id.clone();
        store
            .write(move |w| w.revoke_join_token(&id))
            .await
            .unwrap();
        assert!(matches!(
            enrol("wj_rev", "n4").await,
            Err(JoinRefused::Revoked { .. })
        ));
        let tokens = store.read(|r| r.join_tokens()).unwrap();
        assert_eq!(tokens.len(), 3);
        let used = tokens.iter().find(|t| !t.enrolled.is_empty()).unwrap();
        assert_eq!(used.enrolled[0].node, "n1");
        assert_eq!(used.enrolled[0].from, "192.0.2.1");
    }
}
