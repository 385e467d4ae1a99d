//! Router tests of the mesh pages: who sees what, a viewer's writes are refused and change
//! nothing, a refused form keeps what was typed with the message on the right row, create,
//! apply and delete. Agents are never reached: every node's agent URL is a closed loopback
//! port, so a round only finds them unreachable (no interface is ever made).

use super::*;
use crate::controller::nodes::Registry;
use crate::mesh::rules::MeshDraft;
use crate::mesh::{DEFAULT_KEEPALIVE, DEFAULT_MTU, Topology};
use crate::secretbox::SecretBox;
use crate::store::{Mesh, NodeSpec};
use crate::web::api_fixture::closed_port;

impl Fixture {
    /// The node registry, a pool `lan` for peers, a pool `overlay` (the overlay pool if
    /// `overlay`), and nodes `a`, `b`, `c` whose agents are closed loopback ports.
    async fn with_mesh_nodes(mut self, overlay: bool) -> Fixture {
        for (name, cidr) in [("lan", "10.8.0.0/24"), ("overlay", "10.99.0.0/24")] {
            let spec = PoolSpec {
                name: name.into(),
                cidr: cidr.parse().unwrap(),
                description: None,
                reserve_gateway: false,
                static_ranges: vec![],
            };
            self.state
                .store
                .write(move |w| w.create_pool(&spec, "test"))
                .await
                .unwrap();
        }
        if overlay {
            self.state
                .store
                .write(|w| w.set_overlay_pool(Some("overlay")))
                .await
                .unwrap();
        }
        let registry = Registry::new(
            self.state.store.clone(),
            SecretBox::from_key([9; 32]),
            std::time::Duration::from_secs(2),
        );
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let spec = NodeSpec {
                name: name.into(),
                agent_url: closed_port(),
                endpoint_host: format!("{name}.example.net"),
                listen_port: 51820,
                peer_pool: "lan".into(),
                max_peers: 10,
                weight: 1,
                labels: vec![],
                enabled: true,
            };
            assert_eq!(i, self.state.store.read(|r| r.nodes()).unwrap().len());
            registry.register(spec, "test").await.unwrap();
        }
        self.state.peer_nodes = Arc::new(registry.clone());
        self.state.nodes = Some(registry);
        self
    }

    /// Mesh `office` of `a` (LAN 192.168.10.0/24) and `b`, straight through the store.
    async fn office(&self) -> Mesh {
        let draft = MeshDraft {
            name: "office".into(),
            topology: Topology::FullMesh,
            hubs: vec![],
            members: vec![
                ("a".into(), vec!["192.168.10.0/24".parse().unwrap()]),
                ("b".into(), vec![]),
            ],
            listen_port: None,
            keepalive: DEFAULT_KEEPALIVE,
            mtu: DEFAULT_MTU,
        };
        self.state
            .store
            .write(move |w| w.create_mesh(&draft, None, "test"))
            .await
            .unwrap()
    }

    fn meshes(&self) -> Vec<Mesh> {
        self.state.store.read(|r| r.meshes()).unwrap()
    }

    async fn mesh_admin_and_viewer(&self) -> (String, String) {
        self.user("ada", Role::Admin).await;
        self.user("vic", Role::Viewer).await;
        (self.login("ada").await, self.login("vic").await)
    }
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_the_login() {
    let f = Fixture::new().with_mesh_nodes(true).await;
    let resp = f.get("/meshes", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2Fmeshes");
}

#[tokio::test]
async fn list_and_detail_render_for_admin_and_viewer() {
    let f = Fixture::new().with_mesh_nodes(true).await;
    let (admin, viewer) = f.mesh_admin_and_viewer().await;
    let empty = text(f.get("/meshes", Some(&admin)).await).await;
    assert!(empty.contains("No meshes yet.") && empty.contains("10.99.0.0/24"));
    let mesh = f.office().await;

    let list = text(f.get("/meshes", Some(&admin)).await).await;
    assert!(list.contains("aria-current=\"page\">Meshes<"), "{list}");
    assert!(list.contains("href=\"/meshes/office\"") && list.contains("full-mesh"));
    assert!(list.contains(&mesh.interface()) && list.contains(">51821<"));
    assert!(list.contains("not applied") && list.contains("New mesh"));
    let list = text(f.get("/meshes", Some(&viewer)).await).await;
    assert!(list.contains("href=\"/meshes/office\""));
    assert!(!list.contains("New mesh"));

    // Applied (without a round): no member has reported, so each is missing.
    f.state
        .store
        .write(|w| w.mark_mesh_applied("office"))
        .await
        .unwrap();
    let list = text(f.get("/meshes", Some(&viewer)).await).await;
    assert!(
        list.contains("0 in step") && list.contains("2 drifted"),
        "{list}"
    );

    for (who, cookie) in [("admin", &admin), ("viewer", &viewer)] {
        let resp = f.get("/meshes/office", Some(cookie)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{who}");
        let html = text(resp).await;
        assert!(html.contains("Mesh office") && html.contains(&mesh.interface()));
        assert!(html.contains("192.168.10.0/24") && html.contains("10.99.0."));
        assert!(html.contains("mesh-missing") && html.contains(">missing<"));
        // The matrix: the diagonal is a dash, a pair that never reported is "never".
        assert!(html.contains("class=\"hs-none\">—<") && html.contains(">never<"));
        assert_eq!(
            html.contains("/meshes/office/apply"),
            who == "admin",
            "{who}: {html}"
        );
        assert_eq!(html.contains("/meshes/office/delete"), who == "admin");
    }
    // By id as well as by name; an unknown mesh is 404.
    let resp = f.get(&format!("/meshes/{}", mesh.id), Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = f.get("/meshes/nope", Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_viewers_writes_are_403_and_change_nothing() {
    let f = Fixture::new().with_mesh_nodes(true).await;
    let (_, viewer) = f.mesh_admin_and_viewer().await;
    f.office().await;
    for path in ["/meshes/new", "/meshes/office/delete"] {
        let resp = f.get(path, Some(&viewer)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let csrf = f.session_csrf(&viewer).await;
    let create = format!("csrf={csrf}&name=lab&topology=full-mesh&member=a&member=c");
    let resp = f.post_form("/meshes", &viewer, &create).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    for path in ["/meshes/office/apply", "/meshes/office/delete"] {
        let resp = f.post_form(path, &viewer, &format!("csrf={csrf}")).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let meshes = f.meshes();
    assert_eq!(meshes.len(), 1);
    assert_eq!(meshes[0].name, "office");
    assert!(!meshes[0].applied);
}

#[tokio::test]
async fn an_overlapping_lan_comes_back_on_its_row_with_what_was_typed() {
    let f = Fixture::new().with_mesh_nodes(true).await;
    let (admin, _) = f.mesh_admin_and_viewer().await;
    let form = text(f.get("/meshes/new", Some(&admin)).await).await;
    assert!(form.contains("value=\"10.99.0.0/24\" readonly"), "{form}");
    assert!(form.contains("name=\"lan.c\"") && form.contains("value=\"25\""));
    let csrf = f.session_csrf(&admin).await;
    let body = format!(
        "csrf={csrf}&name=typed-name&topology=hub-and-spoke&member=a&lan.a=192.168.10.0%2F24&hub=a&member=b&lan.b=192.168.10.128%2F25&lan.c=&listen_port=&keepalive=30&mtu=1400"
    );
    let resp = f.post_form("/meshes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(html.contains("id=\"lan-a-error\""), "{html}");
    assert!(html.contains("overlaps"));
    assert!(html.contains("value=\"typed-name\""));
    assert!(html.contains("value=\"192.168.10.128/25\""));
    assert!(html.contains("value=\"30\"") && html.contains("value=\"1400\""));
    assert!(html.contains("value=\"hub-and-spoke\" checked"));
    assert!(html.contains("name=\"member\" type=\"checkbox\" value=\"b\" checked"));
    assert!(html.contains("name=\"hub\" type=\"checkbox\" value=\"a\" checked"));
    assert!(!html.contains("name=\"member\" type=\"checkbox\" value=\"c\" checked"));

    // A bad name is shown next to the name, escaped.
    let body = format!("csrf={csrf}&name=%3Cb%3Ex&member=a");
    let resp = f.post_form("/meshes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(html.contains("id=\"name-error\"") && !html.contains("<b>x"));
    assert!(html.contains("&#60;b&#62;x"));
    // A port that is no number is the port's error.
    let body = format!("csrf={csrf}&name=lab&member=a&listen_port=eighty");
    let html = text(f.post_form("/meshes", &admin, &body).await).await;
    assert!(html.contains("id=\"listen_port-error\""));
    assert!(f.meshes().is_empty());
}

#[tokio::test]
async fn creating_a_mesh_redirects_to_its_page_with_a_message() {
    let f = Fixture::new().with_mesh_nodes(true).await;
    let (admin, _) = f.mesh_admin_and_viewer().await;
    let csrf = f.session_csrf(&admin).await;
    let body = format!(
        "csrf={csrf}&name=lab&topology=hub-and-spoke&member=a&hub=a&lan.a=192.168.20.0%2F24&member=c&lan.c=&hub=b&listen_port=&keepalive=25&mtu=1420"
    );
    let resp = f.post_form("/meshes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/meshes/lab");
    let flash = set_cookie(&resp, "weft_flash").unwrap();
    let meshes = f.meshes();
    assert_eq!(meshes.len(), 1);
    let m = &meshes[0];
    assert_eq!(m.topology, Topology::HubAndSpoke);
    // `b` was ticked as a hub but not as a member: its hub box is ignored.
    assert_eq!(m.hubs, vec!["a".to_string()]);
    assert_eq!(m.members.len(), 2);
    assert!(!m.applied);
    let cookie = format!("{admin}; weft_flash={flash}");
    let html = text(f.get("/meshes/lab", Some(&cookie)).await).await;
    assert!(html.contains("Created mesh lab."), "{html}");
    assert!(html.contains("hub-and-spoke") && html.contains("192.168.20.0/24"));
    // A spoke and a spoke are no peers: `c` sees nothing of itself nor of a non-member.
    assert!(html.contains(">never<"));

    // The same name again is the name's error.
    let resp = f.post_form("/meshes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(text(resp).await.contains("id=\"name-error\""));
    assert_eq!(f.meshes().len(), 1);
}

#[tokio::test]
async fn without_an_overlay_pool_the_form_says_so() {
    let f = Fixture::new().with_mesh_nodes(false).await;
    let (admin, _) = f.mesh_admin_and_viewer().await;
    let html = text(f.get("/meshes/new", Some(&admin)).await).await;
    assert!(html.contains("There is no overlay pool"), "{html}");
    assert!(html.contains("href=\"/nodes\"") && html.contains("value=\"no overlay pool\""));
    let list = text(f.get("/meshes", Some(&admin)).await).await;
    assert!(list.contains("none set"));
    let csrf = f.session_csrf(&admin).await;
    let body = format!("csrf={csrf}&name=lab&member=a&member=b");
    let resp = f.post_form("/meshes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let html = text(resp).await;
    assert!(html.contains("there is no overlay pool:") && html.contains("value=\"lab\""));
    assert!(f.meshes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_against_unreachable_agents_marks_the_mesh_applied_and_says_so() {
    let f = Fixture::new().with_mesh_nodes(true).await;
    let (admin, _) = f.mesh_admin_and_viewer().await;
    f.office().await;
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form("/meshes/office/apply", &admin, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/meshes/office");
    let flash = set_cookie(&resp, "weft_flash").unwrap();
    assert!(f.meshes()[0].applied);
    let cookie = format!("{admin}; weft_flash={flash}");
    let html = text(f.get("/meshes/office", Some(&cookie)).await).await;
    assert!(
        html.contains("Applied mesh office: 0 of 2 members in step."),
        "{html}"
    );
    assert!(html.contains(">missing<") && html.contains("Apply again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_asks_first_then_removes_the_mesh_and_keeps_the_addresses() {
    let f = Fixture::new().with_mesh_nodes(true).await;
    let (admin, _) = f.mesh_admin_and_viewer().await;
    f.office().await;
    let overlay = |f: &Fixture| {
        f.state
            .store
            .read(|r| r.nodes())
            .unwrap()
            .into_iter()
            .map(|n| n.overlay_address)
            .collect::<Vec<_>>()
    };
    let before = overlay(&f);
    assert!(before.iter().all(Option::is_some));
    let resp = f.get("/meshes/office/delete", Some(&admin)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains("Delete mesh office") && html.contains("keep their overlay addresses"));
    assert_eq!(f.meshes().len(), 1, "asking deletes nothing");
    let csrf = csrf_in(&html);
    let resp = f
        .post_form("/meshes/office/delete", &admin, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/meshes");
    let flash = set_cookie(&resp, "weft_flash").unwrap();
    assert!(f.meshes().is_empty());
    assert_eq!(overlay(&f), before);
    let cookie = format!("{admin}; weft_flash={flash}");
    let html = text(f.get("/meshes", Some(&cookie)).await).await;
    assert!(
        html.contains("Deleted mesh office: torn down on 0 of 2 members"),
        "{html}"
    );
    assert!(html.contains("The members keep their overlay addresses."));
    assert_eq!(
        f.get("/meshes/office", Some(&admin)).await.status(),
        StatusCode::NOT_FOUND
    );
}
