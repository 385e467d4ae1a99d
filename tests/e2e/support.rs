//! A real `weft serve` on loopback, and one helper per kind of request.

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A `weft serve` process with its own data dir; killed and cleaned up on drop.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub token: String,
    pub client: Client,
    child: Option<Child>,
}

/// Runs `weft` with arguments and returns stdout; panics with stderr if it fails.
pub fn weft(args: &[&str]) -> String {
    let out = Command::new(WEFT).args(args).output().expect("run weft");
    assert!(
        out.status.success(),
        "weft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a token on a data dir and returns its secret (the last line of stdout).
pub fn create_token(data_dir: &Path, name: &str, read_only: bool) -> String {
    let dir = data_dir.to_str().expect("utf-8 path");
    let mut args = vec!["token", "create", "--name", name, "--data-dir", dir];
    if read_only {
        args.push("--read-only");
    }
    weft(&args)
        .lines()
        .last()
        .expect("a secret line")
        .trim()
        .to_string()
}

/// Installs a built plugin as DATA_DIR/plugins/NAME/.
fn install(data_dir: &Path, name: &str, crate_name: &str, manifest: &str) {
    let dir = data_dir.join("plugins").join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(dir.join("plugin.toml"), manifest).expect("plugin.toml");
    std::fs::copy(plugin_wasm(crate_name), dir.join("plugin.wasm")).expect("copy plugin");
}

/// A plugin built by the README's test command into the shared target dir.
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(format!("wasm32-wasip2/release/{crate_name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: the plugins are built by the README's test command (tests/run)",
        path.display()
    );
    path
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    /// A fresh data dir with an admin token, and a server on it.
    pub async fn start() -> Server {
        Self::start_with_plugins(&[]).await
    }

    /// [`Server::start`] with plugins installed before the server starts, as `(name, crate,
    /// manifest)`: loaded at startup, so no folder change is still on its way when the test
    /// begins (a reload from one would clear a plugin's failures under the test's feet).
    pub async fn start_with_plugins(plugins: &[(&str, &str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = create_token(&dir.path().join("data"), "admin", false);
        for (name, crate_name, manifest) in plugins {
            install(&dir.path().join("data"), name, crate_name, manifest);
        }
        let mut s = Server {
            dir,
            addr: String::new(),
            token,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            child: None,
        };
        s.restart().await;
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process (again) on the same data dir, on a new port, and waits until ready.
    pub async fn restart(&mut self) {
        self.kill();
        let port = free_port();
        self.addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(self.dir.path().join(format!("serve-{port}.log")))
            .expect("log file");
        let child = Command::new(WEFT)
            .args(["serve", "--listen", &self.addr, "--data-dir"])
            .arg(self.data_dir())
            .env("WEFT_LOG", "warn")
            // Test pools are not loopback: the ping sweep must not send a packet to them.
            .env("WEFT_PING_INTERVAL", "0")
            // Nodes are polled every second, so a test sees a dead agent go offline quickly.
            .env("WEFT_HEALTH_INTERVAL", "1")
            .env("WEFT_HEALTH_TIMEOUT", "2")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn weft serve");
        self.child = Some(child);
        self.wait_ready().await;
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get(self.url("/healthz")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weft serve did not become ready on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait")
    }

    /// Installs a built plugin component as DATA_DIR/plugins/NAME/ with `manifest` beside it.
    /// A running server picks it up (see `reload_plugins` to wait for that).
    pub fn install_plugin(&self, name: &str, crate_name: &str, manifest: &str) {
        install(&self.data_dir(), name, crate_name, manifest);
    }

    /// Reloads the server's plugins now and returns its list.
    pub async fn reload_plugins(&self) -> Value {
        let (status, body) = self.post("/api/v1/plugins/reload", Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the server logged so far, across restarts (one log file per port).
    pub fn log_text(&self) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("the server's dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("serve-"))
            })
            .collect();
        logs.sort();
        logs.iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// The path of the one-time setup link (`/setup/<token>`) that a server on a data dir with
    /// no user logs, if it did.
    pub fn setup_path(&self) -> Option<String> {
        let log = self.log_text();
        let token: String = log[log.find("/setup/")? + "/setup/".len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        (!token.is_empty()).then(|| format!("/setup/{token}"))
    }

    /// A request with the admin token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        json_of(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a pool and returns it; panics unless 201.
    pub async fn pool(&self, name: &str, cidr: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/pools",
                serde_json::json!({"name": name, "cidr": cidr}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// The pool's CSV export: a snapshot of its stored state, to compare before and after.
    pub async fn export(&self, pool: &str) -> String {
        let r = self
            .client
            .get(self.url(&format!("/api/v1/pools/{pool}/export.csv")))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("export");
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.expect("csv")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts the error shape: `{"error": {"code", "message"}}` with the message containing `needle`.
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(body["error"]["code"].is_string(), "no error code in {body}");
    assert!(
        msg.contains(needle),
        "message {msg:?} does not mention {needle:?}"
    );
}

/// Helpers for requests `call` cannot express (no token, raw bodies, extra headers) and for
/// snapshots of the store to compare before and after an error.
impl Server {
    /// A request builder with the given token (or none), for bodies and headers of any kind.
    pub fn request(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request built with [`Server::request`] and returns its status and JSON body.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        json_of(req.send().await.expect("request")).await
    }

    /// Sends a raw body with a content type, with the admin token.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let req = self
            .request(Some(&self.token), method, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_string());
        self.send(req).await
    }

    /// Allocates from a pool with an `Idempotency-Key` header.
    pub async fn allocate_with_key(
        &self,
        pool: &str,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = self
            .request(
                Some(&self.token),
                Method::POST,
                &format!("/api/v1/pools/{pool}/allocations"),
            )
            .header("Idempotency-Key", key)
            .json(&body);
        self.send(req).await
    }

    /// Allocates the next free address of a pool; panics unless 201; returns the address.
    pub async fn allocate(&self, pool: &str) -> String {
        let (status, body) = self
            .post(
                &format!("/api/v1/pools/{pool}/allocations"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["address"].as_str().expect("address").to_string()
    }

    /// A pool's stats; panics unless 200.
    pub async fn stats(&self, pool: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/pools/{pool}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["stats"].clone()
    }

    /// What the store holds, as far as the API shows it: a pool's CSV export and the list of
    /// every pool with its stats. Equal snapshots before and after a request mean it changed
    /// nothing.
    pub async fn snapshot(&self, pool: &str) -> (String, Value) {
        let csv = self.export(pool).await;
        let (status, pools) = self.get("/api/v1/pools").await;
        assert_eq!(status, StatusCode::OK, "{pools}");
        (csv, pools)
    }

    /// The Prometheus text of `/metrics` (no token).
    pub async fn metrics(&self) -> String {
        let r = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.expect("metrics text")
    }

    /// Checks that a pool's stats agree with its stored records (the CSV export).
    pub async fn assert_stats_match_records(&self, pool: &str) {
        let csv = self.export(pool).await;
        let rows = csv_rows(&csv);
        let count = |status: &str| rows.iter().filter(|r| r["status"] == status).count() as u64;
        let stats = self.stats(pool).await;
        let (allocated, reserved, quarantine) =
            (count("allocated"), count("reserved"), count("quarantine"));
        assert_eq!(
            stats["allocated"], allocated,
            "stats {stats} vs records:\n{csv}"
        );
        assert_eq!(
            stats["reserved"], reserved,
            "stats {stats} vs records:\n{csv}"
        );
        assert_eq!(
            stats["quarantine"], quarantine,
            "stats {stats} vs records:\n{csv}"
        );
        let total = stats["total"].as_u64().expect("total");
        let held = allocated + reserved + quarantine;
        assert_eq!(stats["available"], total - held, "stats {stats}");
    }
}

/// Asserts the error shape and its code: `{"error": {"code": code, "message": ...}}`.
pub fn assert_error_code(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].is_string(),
        "no error message in {body}"
    );
}

/// The rows of a CSV text, each as column name -> value.
pub fn csv_rows(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("csv header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("csv row");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
