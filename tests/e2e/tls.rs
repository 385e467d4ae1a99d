//! `weft serve --tls-cert --tls-key`: HTTPS with rustls, under a CA the test makes. A client
//! that trusts the CA is served, with `Secure` cookies; one that does not is refused, and so
//! is plain HTTP on the same port; SIGTERM still ends it cleanly; a bad key stops it at start
//! with a message that names the files. An agent serves HTTPS likewise, and the controller
//! reaches it when told the CA (`--agent-ca`). The CA and the controller here are also those
//! of the join tests (`join.rs`).

use crate::support::{WEFT, create_token, free_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A CA the test made and a server certificate signed by it, as files in the test's dir.
pub struct TestCa {
    /// The CA certificate (PEM), and the file it is in.
    pub pem: String,
    pub file: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and a certificate for `hosts` (addresses or names) signed by it, in `dir`.
pub fn test_ca(dir: &Path, hosts: &[&str]) -> TestCa {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "weft test CA");
    let pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&file, &pem).unwrap();
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    TestCa {
        pem,
        file,
        cert: cert_file,
        key: key_file,
    }
}

/// The names a loopback server's certificate is for.
pub const LOOPBACK: &[&str] = &["127.0.0.1", "localhost"];

/// `weft serve` on `listen` (HOST:PORT) with DIR/data and `extra` arguments, stderr piped;
/// not started yet.
fn serve(dir: &Path, listen: &str, extra: &[&std::ffi::OsStr]) -> Command {
    let mut serve = Command::new(WEFT);
    serve
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .env("WEFT_PING_INTERVAL", "0")
        .env("WEFT_HEALTH_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    serve
}

/// `--tls-cert CERT --tls-key KEY`.
pub fn tls_args<'a>(cert: &'a Path, key: &'a Path) -> [&'a std::ffi::OsStr; 4] {
    [
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]
}

#[tokio::test]
async fn https_is_served_to_clients_that_trust_the_ca_and_to_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), LOOPBACK);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = serve(dir.path(), &listen, &tls_args(&ca.cert, &ca.key))
        .spawn()
        .unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = trusting.get(url("/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "weft serve never answered over HTTPS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The login form's cookie is `Secure` over HTTPS.
    let login = trusting.get(url("/login")).send().await.unwrap();
    let cookies: Vec<String> = login
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(!cookies.is_empty());
    assert!(cookies.iter().all(|c| c.contains("Secure")), "{cookies:?}");

    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(
        untrusting.get(url("/healthz")).send().await.is_err(),
        "a client without the CA must not accept the certificate"
    );
    let plain = untrusting
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status() != 200),
        "plain HTTP is not served on the HTTPS port"
    );

    // SIGTERM ends it cleanly, as over plain HTTP.
    // SAFETY: kill with a valid pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_key_that_does_not_parse_stops_serve_at_start_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), LOOPBACK);
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let out = serve(dir.path(), &listen, &tls_args(&ca.cert, &bad))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("TLS certificate") && said.contains("bad.pem"),
        "{said}"
    );
}

/// Kills a child process when dropped, however the test ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `weft serve` for these tests: its admin token and an API client (over HTTPS,
/// trusting the test CA, when it serves TLS). Nodes are not polled: a node's status changes
/// only when a test asks (`/test`), so what the API shows stays put between two reads.
pub struct Controller {
    _child: Killed,
    /// The address it listens on, and its URL (with a trailing slash).
    pub host: String,
    pub base: String,
    pub data: PathBuf,
    /// What it logged (stderr).
    pub log: PathBuf,
    token: String,
    client: reqwest::Client,
}

impl Controller {
    /// `weft serve` on `host` (a free port) with DIR/data, `extra` arguments, and a client
    /// over HTTPS trusting `https_ca` (PEM) if given, else over plain HTTP.
    pub async fn start(
        dir: &Path,
        host: &str,
        extra: &[&std::ffi::OsStr],
        https_ca: Option<&str>,
    ) -> Controller {
        let data = dir.join("data");
        let token = create_token(&data, "admin", false);
        let port = free_port();
        let log = dir.join("serve.log");
        let child = serve(dir, &format!("{host}:{port}"), extra)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(pem) = https_ca {
            client = client
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        }
        let scheme = if https_ca.is_some() { "https" } else { "http" };
        let c = Controller {
            _child: Killed(child),
            log,
            host: host.to_string(),
            base: format!("{scheme}://{host}:{port}/"),
            data,
            token,
            client: client.build().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c
            .api(reqwest::Method::GET, "/healthz")
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "weft serve never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    }

    fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, &path[1..]))
            .bearer_auth(&self.token)
    }

    /// A call with an optional JSON body; the answer's JSON.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.call_status(method, path, body).await.1
    }

    /// A call with an optional JSON body; the answer's status and JSON.
    pub async fn call_status(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut req = self.api(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer = req.send().await.unwrap();
        (answer.status(), answer.json().await.unwrap_or_default())
    }

    /// Tests node `name` until it answers, or fails the test (early, with what `exited`
    /// says, once the agent's process has ended).
    pub async fn wait_online(&self, name: &str, mut exited: impl FnMut() -> Option<String>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let path = format!("/api/v1/nodes/{name}/test");
            let test = self.call(reqwest::Method::POST, &path, None).await;
            if test["ok"] == true {
                assert_eq!(test["status"], "online");
                return;
            }
            if let Some(why) = exited() {
                panic!("the agent exited: {why}");
            }
            assert!(
                Instant::now() < deadline,
                "{name} never answered: {test}\ncontroller: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn an_agent_serves_https_and_the_controller_trusts_it_through_agent_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), LOOPBACK);
    let agent_ca = ["--agent-ca".as_ref(), ca.file.as_os_str()];
    let c = Controller::start(dir.path(), "127.0.0.1", &agent_ca, None).await;
    let pool = json!({"name": "vpn", "cidr": "10.66.0.0/24"});
    c.call(reqwest::Method::POST, "/api/v1/pools", Some(pool))
        .await;
    let agent_port = free_port();
    let node = json!({"name": "n1", "agent_url": format!("https://127.0.0.1:{agent_port}/"),
        "endpoint_host": "127.0.0.1", "peer_pool": "vpn"});
    let registered = c
        .call(reqwest::Method::POST, "/api/v1/nodes", Some(node))
        .await;
    let secret = registered["secret"].as_str().unwrap();
    let secret_file = dir.path().join("secret");
    crate::dataplane::write_secret(&secret_file, secret);
    let mut agent = Killed(
        Command::new(WEFT)
            .args(["agent", "--listen", &format!("127.0.0.1:{agent_port}")])
            .args(["--node-id", "n1", "--secret-file"])
            .arg(&secret_file)
            .arg("--data-dir")
            .arg(dir.path().join("agent"))
            .args(tls_args(&ca.cert, &ca.key))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    c.wait_online("n1", || {
        agent.0.try_wait().ok().flatten().map(|s| format!("{s:?}"))
    })
    .await;
    // Without the CA, the same agent is not trusted.
    let untrusting =
        crate::dataplane::client_for(&format!("https://127.0.0.1:{agent_port}/"), "n1", secret);
    let e = untrusting.health().await.unwrap_err();
    assert!(
        weft::error_chain(&e).contains("certificate"),
        "{}",
        weft::error_chain(&e)
    );
}
