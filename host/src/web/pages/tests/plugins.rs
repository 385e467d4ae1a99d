//! Router tests of the plugins page: what each role sees, and reload and run behind the admin
//! role and the CSRF token.

use super::*;
use crate::plugins::PluginHost;

impl Fixture {
    /// A plugin host over a folder with `least-loaded` (loads) and `broken` (refused: its
    /// manifest asks for a permission weft does not know).
    fn with_plugins(mut self) -> Fixture {
        let root = self.dir.path().join("plugins");
        let good = root.join("least-loaded");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::write(
            good.join("plugin.toml"),
            "name = \"least-loaded\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\ndescription = \"Fewest peers per weight\"\n",
        )
        .unwrap();
        std::fs::write(
            good.join("p.wasm"),
            crate::plugins::tests::component("least_loaded"),
        )
        .unwrap();
        let bad = root.join("broken");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(
            bad.join("plugin.toml"),
            "name = \"broken\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n[permissions]\nfilesystem = true\n",
        )
        .unwrap();
        // A NetBox sync pointed at a loopback port where nothing listens: its runs fail,
        // and are kept like any other.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let sync = root.join("netbox-sync");
        std::fs::create_dir_all(&sync).unwrap();
        std::fs::write(
            sync.join("plugin.toml"),
            format!(
                "name = \"netbox-sync\"\nversion = \"0.1.0\"\nworld = \"ipam-sync\"\n[config]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"t\"\n[permissions]\noutbound_hosts = [\"127.0.0.1:{port}\"]\n"
            ),
        )
        .unwrap();
        std::fs::write(
            sync.join("p.wasm"),
            crate::plugins::tests::component("netbox_sync"),
        )
        .unwrap();
        let host = PluginHost::new(vec![root], None).unwrap();
        self.state.plugins = Some(Arc::new(host));
        self
    }
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_the_login() {
    let f = Fixture::new().with_plugins();
    let resp = f.get("/plugins", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2Fplugins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sync_now_runs_it_and_the_page_shows_the_run() {
    let f = Fixture::new().with_plugins();
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let html = text(f.get("/plugins", Some(&admin)).await).await;
    assert!(html.contains("Run sync now"));
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form("/plugins/netbox-sync/run", &admin, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let html = text(f.get("/plugins", Some(&admin)).await).await;
    assert!(html.contains("Latest runs of netbox-sync"), "no runs table");
    assert!(
        html.contains("run-failed") && html.contains("manual"),
        "{html}"
    );
    let runs = f
        .state
        .store
        .read(|r| r.plugin_runs("netbox-sync", 10))
        .unwrap();
    assert_eq!(runs.len(), 1);
}

#[tokio::test]
async fn a_viewer_sees_each_plugin_with_its_state_and_no_buttons() {
    let f = Fixture::new().with_plugins();
    f.user("vera", Role::Viewer).await;
    let cookie = f.login("vera").await;
    let resp = f.get("/plugins", Some(&cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains("least-loaded") && html.contains("Fewest peers per weight"));
    assert!(html.contains("node-selector") && html.contains("v0.1.0"));
    assert!(html.contains("badge plugin-loaded") && html.contains("badge plugin-refused"));
    assert!(
        html.contains("filesystem"),
        "the refusal names the unknown permission"
    );
    assert!(html.contains("50 ms"), "the time limit is shown");
    assert!(!html.contains("Reload all"));
}

#[tokio::test]
async fn reload_takes_an_admin_and_the_csrf_token() {
    let f = Fixture::new().with_plugins();
    f.user("ada", Role::Admin).await;
    f.user("vera", Role::Viewer).await;
    let admin = f.login("ada").await;
    let html = text(f.get("/plugins", Some(&admin)).await).await;
    assert!(html.contains("Reload all"));
    let csrf = f.session_csrf(&admin).await;

    let resp = f.post_form("/plugins/reload", &admin, "csrf=forged").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let viewer = f.login("vera").await;
    let viewer_csrf = f.session_csrf(&viewer).await;
    let resp = f
        .post_form("/plugins/reload", &viewer, &format!("csrf={viewer_csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = f
        .post_form("/plugins/reload", &admin, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/plugins");
    let flash = set_cookie(&resp, "weft_flash").unwrap_or_default();
    let message = String::from_utf8(hex::decode(&flash).unwrap_or_default()).unwrap_or_default();
    assert_eq!(message, "Reloaded 3 plugins (1 refused)");
}

#[tokio::test]
async fn running_something_that_is_not_a_sync_is_refused() {
    let f = Fixture::new().with_plugins();
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form("/plugins/least-loaded/run", &admin, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_plugin_host_the_page_says_so() {
    let f = Fixture::new();
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let html = text(f.get("/plugins", Some(&admin)).await).await;
    assert!(html.contains("plugin host is not running"));
}
