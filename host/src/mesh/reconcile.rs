//! What one agent must be told so that it runs exactly the meshes it should: a pure diff of
//! the desired configurations against what the agent reports (`GET /v1/meshes`).
//!
//! A mesh is pushed when the agent lacks it, runs another configuration (by digest), or says
//! its interface drifted from what it applied (`in_sync` false); a mesh the agent runs but
//! should not is deleted. A member whose configuration did not change is left alone.

use crate::agent_api::{MeshSpec, MeshStatus};
use std::collections::HashMap;

/// One thing to tell an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// `PUT /v1/meshes/{id}` with this state.
    Put { id: &'a str, spec: &'a MeshSpec },
    /// `DELETE /v1/meshes/{id}`.
    Delete { id: &'a str },
}

/// Why a mesh on an agent differs from what it should be, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Drift {
    /// The agent does not run the mesh.
    Missing,
    /// The agent runs another configuration of it.
    Changed,
    /// The agent's interface differs from what it applied (changed by hand, or not restored).
    OutOfSync,
}

/// How a mesh on an agent compares with its desired configuration.
pub fn drift(
    desired: &MeshSpec,
    desired_digest: &str,
    actual: Option<&MeshStatus>,
) -> Option<Drift> {
    match actual {
        None => Some(Drift::Missing),
        Some(a) if a.digest != desired_digest || a.interface != desired.interface => {
            Some(Drift::Changed)
        }
        Some(a) if !a.in_sync => Some(Drift::OutOfSync),
        Some(_) => None,
    }
}

/// The actions that bring an agent from `actual` to `desired` (mesh id → configuration and its
/// digest): puts in the order of `desired`, then deletes in the order of `actual`.
pub fn plan<'a>(
    desired: &'a [(String, MeshSpec, String)],
    actual: &'a [MeshStatus],
) -> Vec<Action<'a>> {
    let by_id: HashMap<&str, &MeshStatus> = actual.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut actions: Vec<Action> = desired
        .iter()
        .filter(|(id, spec, digest)| drift(spec, digest, by_id.get(id.as_str()).copied()).is_some())
        .map(|(id, spec, _)| Action::Put { id, spec })
        .collect();
    let wanted: std::collections::HashSet<&str> =
        desired.iter().map(|(id, _, _)| id.as_str()).collect();
    actions.extend(
        actual
            .iter()
            .filter(|m| !wanted.contains(m.id.as_str()))
            .map(|m| Action::Delete { id: &m.id }),
    );
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16) -> MeshSpec {
        MeshSpec {
            generation: 1,
            interface: "wg-aaaaaaaa".into(),
            address: "10.99.0.1/32".parse().unwrap(),
            listen_port: port,
            mtu: 1420,
            forward: false,
            peers: vec![],
        }
    }

    fn status(id: &str, s: &MeshSpec, in_sync: bool) -> MeshStatus {
        MeshStatus {
            id: id.into(),
            generation: s.generation,
            digest: s.digest(),
            interface: s.interface.clone(),
            in_sync,
            peers: vec![],
        }
    }

    fn desired(id: &str, s: MeshSpec) -> (String, MeshSpec, String) {
        let d = s.digest();
        (id.into(), s, d)
    }

    #[test]
    fn an_agent_in_step_is_told_nothing() {
        let want = [desired("aaaaaaaa", spec(1))];
        let have = [status("aaaaaaaa", &spec(1), true)];
        assert_eq!(plan(&want, &have), vec![]);
    }

    #[test]
    fn a_new_generation_of_the_same_configuration_is_not_pushed() {
        let mut newer = spec(1);
        newer.generation = 9;
        let want = [desired("aaaaaaaa", newer)];
        let have = [status("aaaaaaaa", &spec(1), true)];
        assert_eq!(
            plan(&want, &have),
            vec![],
            "the digest leaves the generation out"
        );
    }

    #[test]
    fn missing_changed_and_drifted_meshes_are_pushed_and_extra_ones_deleted() {
        let want = [
            desired("aaaaaaaa", spec(1)),
            desired("bbbbbbbb", spec(2)),
            desired("cccccccc", spec(3)),
        ];
        let have = [
            status("bbbbbbbb", &spec(20), true),
            status("cccccccc", &spec(3), false),
            status("dddddddd", &spec(4), true),
        ];
        let ids: Vec<String> = plan(&want, &have)
            .iter()
            .map(|a| match a {
                Action::Put { id, .. } => format!("put {id}"),
                Action::Delete { id } => format!("delete {id}"),
            })
            .collect();
        assert_eq!(
            ids,
            [
                "put aaaaaaaa",
                "put bbbbbbbb",
                "put cccccccc",
                "delete dddddddd"
            ]
        );
        assert_eq!(drift(&want[0].1, &want[0].2, None), Some(Drift::Missing));
        assert_eq!(
            drift(&want[1].1, &want[1].2, Some(&have[0])),
            Some(Drift::Changed)
        );
        assert_eq!(
            drift(&want[2].1, &want[2].2, Some(&have[1])),
            Some(Drift::OutOfSync)
        );
    }
}
