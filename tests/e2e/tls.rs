//! `weft serve --tls-cert --tls-key`: HTTPS with rustls, under a CA the test makes. A client
//! that trusts the CA is served, with `Secure` cookies; one that does not is refused, and so
//! is plain HTTP on the same port; SIGTERM still ends it cleanly; a bad key stops it at start
//! with a message that names the files. An agent serves HTTPS likewise, and the controller
//! reaches it when told the CA (`--agent-ca`).

use crate::support::{WEFT, create_token, free_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, cert file, key file).
fn test_ca(dir: &Path) -> (String, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "weft test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca_pem, cert_file, key_file)
}

/// `weft serve` on 127.0.0.1:`port` with DIR/data and `extra` arguments; stderr piped.
fn serve(dir: &Path, port: u16, extra: &[&std::ffi::OsStr]) -> std::process::Child {
    Command::new(WEFT)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args(extra)
        .env("WEFT_PING_INTERVAL", "0")
        .env("WEFT_HEALTH_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `--tls-cert CERT --tls-key KEY`.
fn tls_args<'a>(cert: &'a Path, key: &'a Path) -> [&'a std::ffi::OsStr; 4] {
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
    let (ca_pem, cert, key) = test_ca(dir.path());
    let port = free_port();
    let mut child = serve(dir.path(), port, &tls_args(&cert, &key));
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
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
    let (_, cert, _) = test_ca(dir.path());
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let out = serve(dir.path(), free_port(), &tls_args(&cert, &bad))
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("TLS certificate") && said.contains("bad.pem"),
        "{said}"
    );
}

/// Kills a child process when dropped, however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `weft serve` for these tests: its admin token and an API client (over HTTPS,
/// trusting the test CA, when it serves TLS).
struct Controller {
    _child: Killed,
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Controller {
    async fn start(dir: &Path, extra: &[&std::ffi::OsStr], https_ca: Option<&str>) -> Controller {
        let token = create_token(&dir.join("data"), "admin", false);
        let port = free_port();
        let child = Killed(serve(dir, port, extra));
        let mut client = reqwest::Client::builder();
        if let Some(pem) = https_ca {
            client = client
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        }
        let scheme = if https_ca.is_some() { "https" } else { "http" };
        let c = Controller {
            _child: child,
            base: format!("{scheme}://127.0.0.1:{port}/"),
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
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.api(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap().json().await.unwrap_or_default()
    }

    /// Tests node `name` until it answers, or fails the test (early if `agent` exited).
    async fn wait_online(&self, name: &str, agent: &mut Killed) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let path = format!("/api/v1/nodes/{name}/test");
            let test = self.call(reqwest::Method::POST, &path, None).await;
            if test["ok"] == true {
                assert_eq!(test["status"], "online");
                return;
            }
            if let Ok(Some(status)) = agent.0.try_wait() {
                panic!("the agent exited: {status:?}");
            }
            assert!(Instant::now() < deadline, "{name} never answered: {test}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn an_agent_serves_https_and_the_controller_trusts_it_through_agent_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert, key) = test_ca(dir.path());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let agent_ca = ["--agent-ca".as_ref(), ca_file.as_os_str()];
    let c = Controller::start(dir.path(), &agent_ca, None).await;
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
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    c.wait_online("n1", &mut agent).await;
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

/// `weft agent join` with `args` and a token; its exit status and what it said.
fn join(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(WEFT)
        .args(["agent", "join"])
        .args(args)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn node_token(data: &Path, args: &[&str]) -> String {
    let out = Command::new(WEFT)
        .args(["node", "token"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

#[tokio::test]
async fn a_node_joins_over_https_with_a_one_time_token_and_bad_tokens_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert, key) = test_ca(dir.path());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let data = dir.path().join("data");
    let c = Controller::start(dir.path(), &tls_args(&cert, &key), Some(&ca_pem)).await;
    let base = c.base.clone();
    for (name, cidr) in [("vpn", "10.67.0.0/24"), ("ov", "100.67.0.0/24")] {
        let pool = json!({"name": name, "cidr": cidr});
        c.call(reqwest::Method::POST, "/api/v1/pools", Some(pool))
            .await;
    }
    let overlay = json!({"pool": "ov"});
    c.call(reqwest::Method::PUT, "/api/v1/overlay", Some(overlay))
        .await;
    // Made while serving: through the admin socket.
    let made = node_token(&data, &["create", "--pool", "vpn", "--labels", "region=eu"]);
    let secret = made.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("wj_"), "{made}");

    let agent_port = free_port();
    let agent_dir = dir.path().join("agent");
    let join_args = |token: &str, name: &str, url: &str| -> Vec<std::ffi::OsString> {
        [
            url,
            "--token",
            token,
            "--name",
            name,
            "--listen",
            &format!("127.0.0.1:{agent_port}"),
            "--endpoint",
            "127.0.0.1",
            "--ca",
            ca_file.to_str().unwrap(),
            "--data-dir",
            agent_dir.to_str().unwrap(),
        ]
        .iter()
        .map(Into::into)
        .collect()
    };
    let mut agent = Killed(
        Command::new(WEFT)
            .args(["agent", "join"])
            .args(join_args(&secret, "n1", &base))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // It enrols, writes its secret 0600, starts serving, and the controller reaches it.
    c.wait_online("n1", &mut agent).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent_dir.join("secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let node = c.call(reqwest::Method::GET, "/api/v1/nodes/n1", None).await;
    assert_eq!(node["labels"]["region"], "eu", "{node}");
    assert_eq!(node["peer_pool"], "vpn");
    assert!(
        node["overlay_address"]
            .as_str()
            .is_some_and(|a| a.starts_with("100.67.0.")),
        "{node}"
    );
    assert!(
        node["created_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("join-token:")),
        "{node}"
    );
    assert_eq!(node["status"], "online");
    let listed = node_token(&data, &["list"]);
    assert!(
        listed.contains("uses 1/1") && listed.contains("enrolled n1"),
        "{listed}"
    );
    assert!(listed.contains("from 127.0.0.1"), "{listed}");

    // Refused, each saying why, and nothing registered.
    let run = |v: Vec<std::ffi::OsString>| {
        let r: Vec<&std::ffi::OsStr> = v.iter().map(|s| s.as_os_str()).collect();
        join(&r)
    };
    let (ok, said) = run(join_args(&secret, "n2", &base));
    assert!(!ok && said.contains("used up"), "{said}");
    let (ok, said) = run(join_args("wj_forged", "n2", &base));
    assert!(!ok && said.contains("unknown join token"), "{said}");
    let plain = base.replacen("https://", "http://", 1);
    let (ok, said) = run(join_args(&secret, "n2", &plain));
    assert!(
        !ok && said.contains("plain HTTP") && said.contains("--insecure"),
        "{said}"
    );
    let revoked = node_token(&data, &["create", "--pool", "vpn"]);
    let id = revoked.split_whitespace().nth(3).unwrap().to_string();
    node_token(&data, &["revoke", &id]);
    let (ok, said) = run(join_args(
        revoked.lines().last().unwrap().trim(),
        "n2",
        &base,
    ));
    assert!(!ok && said.contains("revoked"), "{said}");
    let expiring = node_token(&data, &["create", "--pool", "vpn", "--expires", "1s"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (ok, said) = run(join_args(
        expiring.lines().last().unwrap().trim(),
        "n2",
        &base,
    ));
    assert!(!ok && said.contains("expired"), "{said}");
    let nodes = c.call(reqwest::Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(nodes["items"].as_array().unwrap().len(), 1, "{nodes}");
}
