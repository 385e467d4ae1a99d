//! Two weft agents, one per network namespace, and a mesh between them applied through the
//! signed API (`PUT /v1/meshes/{id}`, the configuration `mesh::config::generate` makes, as
//! the controller applies it). Shared by the data-plane tests and the `meshplane` bench.
//! The namespaces must already be linked, member `i` reachable at `subnets.underlay(i)`.

use crate::netns::{Netns, link};
use std::path::Path;
use std::time::{Duration, Instant};
use weft::agent_api::{MeshList, MeshStatus};
use weft::agent_client::AgentClient;
use weft::mesh::Topology;
use weft::mesh::config::{Member, MeshParams, generate};
use weft::protocol::Secret;

pub const MESH_ID: &str = "be4c0ffee0000001";

/// The /24s (third octet after `10.`) a pair uses: its control links from the root
/// namespace (`control.i.0/30`), the underlay between the two namespaces, and the overlay.
/// Distinct per caller, so pairs of tests running at once never collide.
pub struct Subnets {
    pub control: u8,
    pub underlay: u8,
    pub overlay: u8,
}

impl Subnets {
    /// Member `i`'s address on the link between the namespaces (1-based host part).
    pub fn underlay(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.underlay, i + 1)
    }

    /// Member `i`'s overlay address.
    pub fn overlay(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.overlay, i + 1)
    }
}

fn write_secret(path: &Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, secret).expect("secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("mode");
}

/// Starts `weft agent` (the binary `weft`, with `extra` arguments) in each namespace and
/// applies a full mesh between them; returns, once both report it in sync, the agents'
/// process ids.
pub async fn weft_mesh(
    weft: &str,
    ns: [&mut Netns; 2],
    dir: &Path,
    subnets: &Subnets,
    extra: &[&str],
) -> Vec<u32> {
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    let tag = subnets.overlay;
    for (i, ns) in ns.into_iter().enumerate() {
        let node = format!("pair{tag}-{i}");
        let secret = format!("{:064x}", 0xbe_u128 + i as u128);
        let file = dir.join(format!("{node}.secret"));
        write_secret(&file, &secret);
        // The control link from this (the root) namespace.
        let control = subnets.control;
        link(
            None,
            &format!("10.{control}.{i}.1/30"),
            ns,
            &format!("10.{control}.{i}.2/30"),
        );
        let listen = format!("10.{control}.{i}.2:7443");
        let data = dir.join(&node);
        let uapi = dir.join(format!("{node}-uapi"));
        let mut args = vec![
            weft,
            "agent",
            "--listen",
            &listen,
            "--node-id",
            &node,
            "--secret-file",
            file.to_str().expect("path"),
            "--data-dir",
            data.to_str().expect("path"),
            "--uapi-dir",
            uapi.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        let agent = ns.spawn(
            &args,
            &[("WEFT_LOG", "warn")],
            &dir.join(format!("{node}.log")),
        );
        pids.push(ns.pid(agent));
        let s = Secret::from_file_contents(secret.as_bytes()).expect("secret");
        let client = AgentClient::new(
            format!("http://{listen}/").parse().expect("url"),
            &node,
            s,
            Duration::from_secs(5),
        )
        .expect("client");
        clients.push((node, client));
    }
    // Each agent's mesh key, once it answers.
    let mut lists: Vec<MeshList> = Vec::new();
    for (node, c) in &clients {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(answer) = c.call(reqwest::Method::GET, "/v1/meshes", Vec::new()).await
                && let Ok(list) = serde_json::from_slice::<MeshList>(&answer.body)
            {
                lists.push(list);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent {node} did not come up: {}",
                std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let hosts = [subnets.underlay(0), subnets.underlay(1)];
    let members: Vec<Member> = (0..2)
        .map(|i| Member {
            node: &clients[i].0,
            public_key: lists[i].mesh_key,
            overlay: subnets.overlay(i).parse().expect("ip"),
            endpoint_host: &hosts[i],
            lan: &[],
            hub: false,
        })
        .collect();
    let params = MeshParams {
        id: MESH_ID,
        topology: Topology::FullMesh,
        listen_port: 51901,
        keepalive: 25,
        mtu: 1420,
        generation: 1,
    };
    for ((_, c), spec) in clients.iter().zip(generate(&params, &members)) {
        let answer = c
            .call(
                reqwest::Method::PUT,
                &format!("/v1/meshes/{MESH_ID}"),
                serde_json::to_vec(&spec).expect("json"),
            )
            .await
            .expect("PUT /v1/meshes");
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let status: MeshStatus = serde_json::from_slice(&answer.body).expect("status");
        assert!(status.in_sync);
    }
    pids
}
