//! What the last poll of each node's agent saw of its peers (`GET /v1/wg`): handshake and
//! transfer per peer, for the peer pages. Kept in memory: a restart shows "not polled yet"
//! until the next round, and nothing of it is worth a write per poll.

use crate::agent_api::{PeerDump, PublicKey, WgDump};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Peers as their nodes last reported them, by (node, public key).
#[derive(Debug, Clone, Default)]
pub struct WgSeen(Arc<RwLock<HashMap<(String, PublicKey), PeerDump>>>);

impl WgSeen {
    /// Replaces what is known of `node`'s peers by its latest dump.
    pub fn record(&self, node: &str, dump: &WgDump) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|(n, _), _| n != node);
        for iface in &dump.interfaces {
            for peer in &iface.peers {
                map.insert((node.to_string(), peer.public_key), peer.clone());
            }
        }
    }

    /// Forgets a node (deleted, or its agent unreachable: its numbers are no longer news).
    pub fn forget(&self, node: &str) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|(n, _), _| n != node);
    }

    /// A copy of everything known, for one page.
    pub fn seen(&self) -> HashMap<(String, PublicKey), PeerDump> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_api::InterfaceDump;

    fn dump(keys: &[u8]) -> WgDump {
        WgDump {
            interfaces: vec![InterfaceDump {
                name: "weft0".into(),
                public_key: PublicKey([0; 32]),
                listen_port: 51820,
                peers: keys
                    .iter()
                    .map(|k| PeerDump {
                        public_key: PublicKey([*k; 32]),
                        endpoint: None,
                        allowed_ips: vec![],
                        last_handshake: Some(i64::from(*k)),
                        rx_bytes: 1,
                        tx_bytes: 2,
                        persistent_keepalive: None,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_new_dump_replaces_what_its_node_reported_before_and_only_that() {
        let seen = WgSeen::default();
        seen.record("a", &dump(&[1, 2]));
        seen.record("b", &dump(&[3]));
        seen.record("a", &dump(&[2]));
        let now = seen.seen();
        assert!(!now.contains_key(&("a".into(), PublicKey([1; 32]))));
        assert!(now.contains_key(&("a".into(), PublicKey([2; 32]))));
        assert!(now.contains_key(&("b".into(), PublicKey([3; 32]))));
        seen.forget("b");
        assert_eq!(seen.seen().len(), 1);
    }
}
