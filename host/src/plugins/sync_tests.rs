//! The shipped sync plugins (`netbox-sync`, `phpipam-sync`) driven through the plugin host
//! and `syncs::run`, against fake NetBox and phpIPAM servers on 127.0.0.1 that answer the
//! documented response shapes, check the token and record what is created. The `.wasm`
//! files are built by the README's test command (tests/run) before the tests run.

use crate::plugins::PluginHost;
use crate::store::{AllocationRequest, PoolSpec, Store};
use crate::syncs::{self, RunOutcome, SyncError, Trigger, WeftChanges};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tests::component;

/// One request as the fake servers see it.
struct Request {
    method: String,
    /// Path and query.
    target: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn query(&self, key: &str) -> Option<&str> {
        let (_, q) = self.target.split_once('?')?;
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

type Handler = Arc<dyn Fn(&Request) -> (u16, Value) + Send + Sync>;

/// An answer with any headers and body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

type RawHandler = Arc<dyn Fn(&Request) -> Raw + Send + Sync>;

/// A minimal HTTP/1.1 server: one request per connection, answered with JSON and closed.
/// Counts the connections it accepted.
struct Fake {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Fake {
    fn start(rt: &tokio::runtime::Runtime, delay: Duration, handler: Handler) -> Fake {
        Fake::start_raw(
            rt,
            delay,
            Arc::new(move |r: &Request| {
                let (status, body) = handler(r);
                Raw {
                    status,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: body.to_string().into_bytes(),
                }
            }),
        )
    }

    fn start_raw(rt: &tokio::runtime::Runtime, delay: Duration, handler: RawHandler) -> Fake {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        rt.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    let Raw {
                        status,
                        headers,
                        body,
                    } = handler(&request);
                    let mut head = format!("HTTP/1.1 {status} X\r\n");
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str(&format!(
                        "Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ));
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Fake { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn grant(&self) -> String {
        format!("\"127.0.0.1:{}\"", self.addr.port())
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// A fake NetBox: prefixes, IP addresses served two per page (following `next`), POSTs
/// recorded and added to the list, and every request refused without the right token.
#[derive(Default)]
struct NetboxData {
    ips: Vec<Value>,
    posts: Vec<Value>,
    refused: usize,
}

const NETBOX_TOKEN: &str = "nb-secret-0123";

fn fake_netbox(rt: &tokio::runtime::Runtime, delay: Duration) -> (Fake, Arc<Mutex<NetboxData>>) {
    let data = Arc::new(Mutex::new(NetboxData {
        ips: vec![
            nb_ip(
                1,
                "10.0.0.5/24",
                "active",
                "web1.example.com",
                "",
                Some("web1"),
            ),
            nb_ip(2, "10.0.0.6/24", "reserved", "", "spare for db", None),
            nb_ip(3, "192.0.2.10/24", "active", "far.example.com", "", None),
            nb_ip(4, "10.0.0.7/24", "dhcp", "", "", Some("vm-7")),
            nb_ip(5, "10.0.0.8/24", "deprecated", "old", "", None),
        ],
        ..NetboxData::default()
    }));
    let state = data.clone();
    let own: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let me = own.clone();
    let fake = Fake::start(
        rt,
        delay,
        Arc::new(move |r: &Request| {
            let mut d = state.lock().unwrap();
            if r.header("authorization") != Some(&format!("Token {NETBOX_TOKEN}")) {
                d.refused += 1;
                return (403, json!({"detail": "Invalid token"}));
            }
            let base = format!("http://{}", me.lock().unwrap().expect("address"));
            match (r.method.as_str(), r.path()) {
                ("GET", "/api/ipam/prefixes/") => (
                    200,
                    json!({"count": 1, "next": null, "previous": null, "results": [
                        {"id": 1, "prefix": "10.0.0.0/24", "status": {"value": "active", "label": "Active"}}
                    ]}),
                ),
                ("GET", "/api/ipam/ip-addresses/") => {
                    // Two per page whatever `limit` asks, so the plugin must follow `next`.
                    let offset: usize = r.query("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
                    let page: Vec<Value> = d.ips.iter().skip(offset).take(2).cloned().collect();
                    let next = (offset + 2 < d.ips.len()).then(|| {
                        format!(
                            "{base}/api/ipam/ip-addresses/?limit=2&offset={}",
                            offset + 2
                        )
                    });
                    (
                        200,
                        json!({"count": d.ips.len(), "next": next, "previous": null, "results": page}),
                    )
                }
                ("POST", "/api/ipam/ip-addresses/") => {
                    let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
                    let id = 100 + d.posts.len() as u64;
                    let created = nb_ip(
                        id,
                        body["address"].as_str().expect("address"),
                        body["status"].as_str().unwrap_or("active"),
                        body["dns_name"].as_str().unwrap_or(""),
                        body["description"].as_str().unwrap_or(""),
                        None,
                    );
                    d.posts.push(body);
                    d.ips.push(created.clone());
                    (201, created)
                }
                _ => (404, json!({"detail": "Not found."})),
            }
        }),
    );
    *own.lock().unwrap() = Some(fake.addr);
    (fake, data)
}

/// An IP address as NetBox's API shows it (the fields the plugin reads, and some it does
/// not).
fn nb_ip(
    id: u64,
    address: &str,
    status: &str,
    dns: &str,
    description: &str,
    device: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "url": format!("http://netbox/api/ipam/ip-addresses/{id}/"),
        "display": address,
        "family": {"value": 4, "label": "IPv4"},
        "address": address,
        "vrf": null,
        "tenant": null,
        "status": {"value": status, "label": status},
        "role": null,
        "assigned_object_type": device.map(|_| "dcim.interface"),
        "assigned_object_id": device.map(|_| 7),
        "assigned_object": device.map(|name| json!({
            "id": 7, "name": "eth0", "device": {"id": 3, "name": name}
        })),
        "dns_name": dns,
        "description": description,
        "tags": [],
        "custom_fields": {},
    })
}

/// A fake phpIPAM (app `weft`): one subnet, two addresses, POSTs recorded and added.
#[derive(Default)]
struct PhpipamData {
    addresses: Vec<Value>,
    posts: Vec<Value>,
}

const PHPIPAM_TOKEN: &str = "php-secret-4567";

fn fake_phpipam(rt: &tokio::runtime::Runtime) -> (Fake, Arc<Mutex<PhpipamData>>) {
    let data = Arc::new(Mutex::new(PhpipamData {
        addresses: vec![
            json!({"id": "11", "subnetId": "7", "ip": "10.0.0.5", "is_gateway": "0", "hostname": "web1",
                   "mac": "52-54-00-12-34-56", "description": "", "owner": "", "tag": "2", "note": ""}),
            json!({"id": "12", "subnetId": "7", "ip": "10.0.0.6", "is_gateway": "0", "hostname": "",
                   "mac": "", "description": "printer spare", "owner": "", "tag": "3", "note": ""}),
            json!({"id": "13", "subnetId": "8", "ip": "192.0.2.10", "hostname": "far", "tag": "2"}),
        ],
        ..PhpipamData::default()
    }));
    let state = data.clone();
    let fake = Fake::start(
        rt,
        Duration::ZERO,
        Arc::new(move |r: &Request| {
            let mut d = state.lock().unwrap();
            if r.header("token") != Some(PHPIPAM_TOKEN) {
                return (
                    403,
                    json!({"code": 403, "success": false, "message": "Invalid token"}),
                );
            }
            match (r.method.as_str(), r.path()) {
                ("GET", "/api/weft/subnets/") => (
                    200,
                    json!({"code": 200, "success": true, "time": 0.002, "data": [
                        {"id": "7", "subnet": "10.0.0.0", "mask": "24", "sectionId": "1", "description": "lan"},
                        {"id": "8", "subnet": "192.0.2.0", "mask": "24", "sectionId": "1", "description": "far"}
                    ]}),
                ),
                ("GET", "/api/weft/addresses/") => (
                    200,
                    json!({"code": 200, "success": true, "time": 0.003, "data": d.addresses}),
                ),
                ("POST", "/api/weft/addresses/") => {
                    let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
                    let id = (100 + d.posts.len()).to_string();
                    let mut stored = body.clone();
                    stored["id"] = json!(id);
                    d.addresses.push(stored);
                    d.posts.push(body);
                    (
                        201,
                        json!({"code": 201, "success": true, "message": "Address created", "id": id,
                               "location": format!("/api/weft/addresses/{id}/")}),
                    )
                }
                _ => (
                    404,
                    json!({"code": 404, "success": false, "message": "Invalid request"}),
                ),
            }
        }),
    );
    (fake, data)
}

/// weft with pool `lan` (10.0.0.0/24) and one allocation of its own (10.0.0.20, `laptop`),
/// and a plugin host with one sync plugin installed.
struct Weft {
    _dir: tempfile::TempDir,
    store: Store,
    host: Arc<PluginHost>,
    rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

impl Weft {
    fn new(rt: tokio::runtime::Runtime, crate_name: &str, manifest: &str) -> Weft {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("weft.redb")).expect("store");
        let spec = PoolSpec {
            name: "lan".into(),
            cidr: "10.0.0.0/24".parse().expect("cidr"),
            description: None,
            reserve_gateway: true,
            static_ranges: vec![],
        };
        store
            .write_blocking(move |w| w.create_pool(&spec, "admin"))
            .expect("pool");
        let req = AllocationRequest {
            address: Some(ip("10.0.0.20")),
            owner: Some("alice".into()),
            hostname: Some("laptop".into()),
        };
        store
            .write_blocking(move |w| w.allocate("lan", &req, None, "alice"))
            .expect("allocation");
        let plugins = dir.path().join("plugins");
        let name = manifest_name(manifest);
        let folder = plugins.join(&name);
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::write(folder.join("plugin.toml"), manifest).expect("manifest");
        std::fs::write(
            folder.join(format!("{crate_name}.wasm")),
            component(crate_name),
        )
        .expect("component");
        let host =
            Arc::new(PluginHost::new(vec![plugins], Some(dir.path().join("cache"))).expect("host"));
        Weft {
            _dir: dir,
            store,
            host,
            rt,
        }
    }

    fn run(&self, name: &str) -> Result<syncs::RunRecord, SyncError> {
        syncs::run(
            &self.host,
            &self.store,
            name,
            Trigger::Manual,
            self.rt.handle().clone(),
        )
    }

    fn record(&self, a: &str) -> crate::ipam::Record {
        self.store.read(|r| r.address(ip(a))).expect("record")
    }
}

fn manifest_name(manifest: &str) -> String {
    crate::plugins::Manifest::parse(manifest)
        .expect("manifest")
        .name
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn netbox_manifest(url: &str, grants: &str) -> String {
    format!(
        "name = \"netbox-sync\"\nversion = \"0.1.0\"\nworld = \"ipam-sync\"\n\
         [config]\nurl = \"{url}\"\ntoken = \"{NETBOX_TOKEN}\"\n\
         [permissions]\noutbound_hosts = [{grants}]\ntime_limit_ms = 20000\n"
    )
}

/// (created, updated, deleted, errors) of a run that reported.
fn counts(run: &syncs::RunRecord) -> (u32, u32, u32, Vec<String>) {
    match &run.outcome {
        RunOutcome::Report {
            created,
            updated,
            deleted,
            errors,
        } => (*created, *updated, *deleted, errors.clone()),
        RunOutcome::Failed { error } => panic!("the run failed: {error}"),
    }
}

fn changes(created: u32, updated: u32, deleted: u32) -> WeftChanges {
    WeftChanges {
        created,
        updated,
        deleted,
    }
}

#[test]
fn netbox_sync_mirrors_netbox_pushes_back_and_a_second_run_changes_nothing() {
    let rt = runtime();
    let (netbox, data) = fake_netbox(&rt, Duration::ZERO);
    let weft = Weft::new(
        rt,
        "netbox_sync",
        &netbox_manifest(&netbox.url(), &netbox.grant()),
    );

    let first = weft.run("netbox-sync").expect("first run");
    // Devices 1 and 4, reservation 2, and weft's 10.0.0.20 created in NetBox. 3 is outside
    // weft's pools; 5 is deprecated.
    assert_eq!(counts(&first), (4, 0, 0, vec![]));
    assert_eq!(first.weft_changes, changes(3, 0, 0), "as weft counted them");
    let web = weft.record("10.0.0.5");
    assert_eq!(web.status, crate::ipam::Status::Allocated);
    assert_eq!(web.device.as_deref(), Some("netbox:1"));
    assert_eq!(web.hostname.as_deref(), Some("web1.example.com"));
    let vm = weft.record("10.0.0.7");
    assert_eq!(vm.device.as_deref(), Some("netbox:4"));
    assert_eq!(
        vm.hostname.as_deref(),
        Some("vm-7"),
        "from the assigned VM's name"
    );
    let spare = weft.record("10.0.0.6");
    assert_eq!(spare.status, crate::ipam::Status::Reserved);
    assert_eq!(spare.description.as_deref(), Some("netbox:2 spare for db"));
    assert_eq!(
        weft.record("10.0.0.8").status,
        crate::ipam::Status::Available
    );
    let history = weft
        .store
        .read(|r| r.history(ip("10.0.0.5")))
        .expect("history");
    assert_eq!(history.last().expect("event").actor, "plugin:netbox-sync");
    {
        let d = data.lock().unwrap();
        assert_eq!(d.refused, 0, "every request carried the token");
        assert_eq!(d.posts.len(), 1);
        assert_eq!(d.posts[0]["address"], "10.0.0.20/24");
        assert_eq!(d.posts[0]["dns_name"], "laptop");
        assert_eq!(d.posts[0]["status"], "active");
    }

    let second = weft.run("netbox-sync").expect("second run");
    assert_eq!(
        counts(&second),
        (0, 0, 0, vec![]),
        "nothing changed in between"
    );
    assert_eq!(second.weft_changes, changes(0, 0, 0));
    assert_eq!(data.lock().unwrap().posts.len(), 1, "nothing pushed twice");

    // NetBox drops address 1 and renames 4: weft follows.
    {
        let mut d = data.lock().unwrap();
        d.ips.retain(|i| i["id"] != 1);
        for i in d.ips.iter_mut().filter(|i| i["id"] == 4) {
            i["dns_name"] = json!("vm-7.example.com");
        }
    }
    let third = weft.run("netbox-sync").expect("third run");
    assert_eq!(counts(&third), (0, 1, 1, vec![]));
    assert_eq!(third.weft_changes, changes(0, 1, 1));
    assert_eq!(
        weft.record("10.0.0.5").status,
        crate::ipam::Status::Available
    );
    assert_eq!(
        weft.record("10.0.0.7").hostname.as_deref(),
        Some("vm-7.example.com")
    );

    // Every run is recorded, newest first.
    let runs = weft
        .store
        .read(|r| r.plugin_runs("netbox-sync", 10))
        .expect("runs");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0], third);
    assert_eq!(runs[2], first);
    assert_eq!(runs[0].trigger, Trigger::Manual);
    assert_eq!(
        weft.store
            .read(|r| r.last_run("netbox-sync"))
            .expect("last"),
        Some(third)
    );
}

#[test]
fn a_host_not_granted_is_never_reached_and_the_failed_run_is_recorded() {
    let rt = runtime();
    let (netbox, data) = fake_netbox(&rt, Duration::ZERO);
    let (elsewhere, _) = fake_netbox(&rt, Duration::ZERO);
    // The plugin is pointed at `elsewhere`, but its manifest grants only `netbox`.
    let weft = Weft::new(
        rt,
        "netbox_sync",
        &netbox_manifest(&elsewhere.url(), &netbox.grant()),
    );
    let run = weft.run("netbox-sync").expect("a run, recorded as failed");
    let RunOutcome::Failed { error } = &run.outcome else {
        panic!("the run should fail: {:?}", run.outcome);
    };
    assert!(
        error.contains(&format!("127.0.0.1:{}", elsewhere.addr.port()))
            && error.contains("not among the outbound hosts"),
        "{error}"
    );
    assert!(!error.contains(NETBOX_TOKEN), "the token is never shown");
    assert_eq!(
        elsewhere.connections.load(Ordering::SeqCst),
        0,
        "nothing reached it"
    );
    assert_eq!(netbox.connections.load(Ordering::SeqCst), 0);
    assert!(data.lock().unwrap().posts.is_empty());
    assert_eq!(
        weft.store
            .read(|r| r.last_run("netbox-sync"))
            .expect("last"),
        Some(run)
    );
}

#[test]
fn a_second_run_while_one_is_under_way_is_refused() {
    let rt = runtime();
    // Each answer takes 300 ms: the first run is still under way when the second asks.
    let (netbox, _) = fake_netbox(&rt, Duration::from_millis(300));
    let weft = Weft::new(
        rt,
        "netbox_sync",
        &netbox_manifest(&netbox.url(), &netbox.grant()),
    );
    let barrier = std::sync::Barrier::new(2);
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| {
            barrier.wait();
            weft.run("netbox-sync")
        });
        let two = s.spawn(|| {
            barrier.wait();
            weft.run("netbox-sync")
        });
        (one.join().expect("thread"), two.join().expect("thread"))
    });
    let (ran, refused) = match (a, b) {
        (Ok(run), Err(e)) | (Err(e), Ok(run)) => (run, e),
        (a, b) => panic!("expected one run and one refusal, got {a:?} and {b:?}"),
    };
    assert!(matches!(&refused, SyncError::AlreadyRunning(n) if n == "netbox-sync"));
    assert!(refused.to_string().contains("already running"));
    assert!(matches!(ran.outcome, RunOutcome::Report { .. }));
    // The guard is released once the run is over.
    assert!(weft.run("netbox-sync").is_ok());
    let runs = weft
        .store
        .read(|r| r.plugin_runs("netbox-sync", 10))
        .expect("runs");
    assert_eq!(runs.len(), 2, "the refused run is not recorded");
}

#[test]
fn an_unknown_plugin_is_an_error_and_not_recorded() {
    let rt = runtime();
    let (netbox, _) = fake_netbox(&rt, Duration::ZERO);
    let weft = Weft::new(
        rt,
        "netbox_sync",
        &netbox_manifest(&netbox.url(), &netbox.grant()),
    );
    assert!(matches!(
        weft.run("nope"),
        Err(SyncError::Plugin(crate::plugins::PluginError::NotFound(_)))
    ));
    assert_eq!(weft.store.read(|r| r.last_run("nope")).expect("read"), None);
}

#[test]
fn phpipam_sync_mirrors_phpipam_pushes_back_and_a_second_run_changes_nothing() {
    let rt = runtime();
    let (php, data) = fake_phpipam(&rt);
    let manifest = format!(
        "name = \"phpipam-sync\"\nversion = \"0.1.0\"\nworld = \"ipam-sync\"\n\
         [config]\nurl = \"{}\"\napp = \"weft\"\ntoken = \"{PHPIPAM_TOKEN}\"\n\
         [permissions]\noutbound_hosts = [{}]\n",
        php.url(),
        php.grant()
    );
    let weft = Weft::new(rt, "phpipam_sync", &manifest);

    let first = weft.run("phpipam-sync").expect("first run");
    assert_eq!(counts(&first), (3, 0, 0, vec![]));
    assert_eq!(first.weft_changes, changes(2, 0, 0));
    let web = weft.record("10.0.0.5");
    assert_eq!(web.device.as_deref(), Some("phpipam:11"));
    assert_eq!(web.hostname.as_deref(), Some("web1"));
    assert_eq!(web.mac.as_deref(), Some("52:54:00:12:34:56"));
    let spare = weft.record("10.0.0.6");
    assert_eq!(spare.status, crate::ipam::Status::Reserved);
    assert_eq!(
        spare.description.as_deref(),
        Some("phpipam:12 printer spare")
    );
    {
        let d = data.lock().unwrap();
        assert_eq!(d.posts.len(), 1);
        assert_eq!(d.posts[0]["ip"], "10.0.0.20");
        assert_eq!(d.posts[0]["subnetId"], "7");
        assert_eq!(d.posts[0]["hostname"], "laptop");
    }

    let second = weft.run("phpipam-sync").expect("second run");
    assert_eq!(counts(&second), (0, 0, 0, vec![]));
    assert_eq!(data.lock().unwrap().posts.len(), 1);

    // phpIPAM drops the reservation and sees a new MAC for web1: weft follows.
    {
        let mut d = data.lock().unwrap();
        d.addresses.retain(|a| a["id"] != "12");
        for a in d.addresses.iter_mut().filter(|a| a["id"] == "11") {
            a["mac"] = json!("52:54:00:12:34:99");
        }
    }
    let third = weft.run("phpipam-sync").expect("third run");
    assert_eq!(counts(&third), (0, 1, 1, vec![]));
    assert_eq!(third.weft_changes, changes(0, 1, 1));
    assert_eq!(
        weft.record("10.0.0.5").mac.as_deref(),
        Some("52:54:00:12:34:99")
    );
    assert_eq!(
        weft.record("10.0.0.6").status,
        crate::ipam::Status::Available
    );
}

#[test]
fn a_wrong_token_fails_the_run_with_the_answer_and_not_the_token() {
    let rt = runtime();
    let (php, _) = fake_phpipam(&rt);
    let manifest = format!(
        "name = \"phpipam-sync\"\nversion = \"0.1.0\"\nworld = \"ipam-sync\"\n\
         [config]\nurl = \"{}\"\napp = \"weft\"\ntoken = \"wrong-token-89\"\n\
         [permissions]\noutbound_hosts = [{}]\n",
        php.url(),
        php.grant()
    );
    let weft = Weft::new(rt, "phpipam_sync", &manifest);
    let run = weft.run("phpipam-sync").expect("a recorded run");
    let RunOutcome::Failed { error } = &run.outcome else {
        panic!("the run should fail: {:?}", run.outcome);
    };
    assert!(
        error.contains("403") && error.contains("Invalid token"),
        "{error}"
    );
    assert!(!error.contains("wrong-token-89"));
}

#[test]
fn run_now_runs_from_async_code_on_a_blocking_thread() {
    let rt = runtime();
    let (netbox, data) = fake_netbox(&rt, Duration::ZERO);
    let weft = Weft::new(
        rt,
        "netbox_sync",
        &netbox_manifest(&netbox.url(), &netbox.grant()),
    );
    // As an axum handler would: from a task of the runtime that also carries the requests.
    let run = weft
        .rt
        .block_on(async {
            tokio::spawn(syncs::run_now(
                weft.host.clone(),
                weft.store.clone(),
                "netbox-sync".into(),
                Trigger::Schedule,
            ))
            .await
        })
        .expect("task")
        .expect("run");
    assert_eq!(counts(&run), (4, 0, 0, vec![]));
    assert_eq!(run.trigger, Trigger::Schedule);
    assert_eq!(data.lock().unwrap().posts.len(), 1);
}

#[test]
fn the_scheduler_runs_a_sync_on_its_interval_until_shut_down() {
    let rt = runtime();
    let (netbox, _) = fake_netbox(&rt, Duration::ZERO);
    // The shortest interval weft allows; the first run comes one interval after start.
    let manifest = netbox_manifest(&netbox.url(), &netbox.grant()) + "interval_secs = 10\n";
    let weft = Weft::new(rt, "netbox_sync", &manifest);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = weft.rt.spawn(syncs::run_scheduler(
        weft.host.clone(),
        weft.store.clone(),
        stopped,
    ));
    let started = std::time::Instant::now();
    let run = loop {
        if let Some(run) = weft
            .store
            .read(|r| r.last_run("netbox-sync"))
            .expect("read")
        {
            break run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no scheduled run within 40 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "not before its interval"
    );
    assert_eq!(run.trigger, Trigger::Schedule);
    assert_eq!(counts(&run), (4, 0, 0, vec![]));
    stop.send(()).expect("scheduler alive");
    weft.rt.block_on(scheduler).expect("the scheduler stops");
}

mod imports {
    //! The host's side of the `ipam` and `http` imports, called directly as a plugin's call
    //! would (a call store with the plugin's manifest and a sync's reach).
    use super::*;
    use crate::plugins::bindings::imports::weft::plugin::{http, ipam, types};
    use crate::plugins::call::{self, CallState, PluginInfo, Reach};
    use crate::plugins::runtime::Runtime;
    use crate::plugins::sync_host::{MAX_BODY, SyncReach};
    use http::Host as _;
    use ipam::Host as _;

    /// Runs `f` on the state of a call of a sync plugin granted `grants`, which may run for
    /// `limit`.
    fn with_call<R>(
        weft: &Weft,
        grants: &str,
        limit: Duration,
        f: impl FnOnce(&mut CallState) -> R,
    ) -> R {
        let m = crate::plugins::Manifest::parse(&format!(
            "name = \"test-sync\"\nversion = \"0.1.0\"\nworld = \"ipam-sync\"\n[permissions]\noutbound_hosts = [{grants}]\n"
        ))
        .expect("manifest");
        let info = Arc::new(PluginInfo {
            name: m.name,
            world: m.world,
            config: m.config,
            permissions: m.permissions,
        });
        let runtime = Runtime::new(None).expect("runtime");
        let reach = SyncReach::new(weft.store.clone(), weft.rt.handle().clone(), limit);
        let mut store = call::store(runtime.engine(), &info, Reach::Sync(reach));
        f(store.data_mut())
    }

    /// weft with `lan` and alice's 10.0.0.20, and no plugin installed.
    fn weft() -> Weft {
        let rt = runtime();
        let (netbox, _) = fake_netbox(&rt, Duration::ZERO);
        Weft::new(
            rt,
            "netbox_sync",
            &netbox_manifest(&netbox.url(), &netbox.grant()),
        )
    }

    fn get(url: &str, headers: &[(&str, &str)]) -> http::Request {
        http::Request {
            method: http::Method::Get,
            url: url.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| types::Pair {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            body: None,
        }
    }

    #[test]
    fn ipam_imports_check_their_input_and_record_the_plugin_as_actor() {
        let weft = weft();
        let minute = Duration::from_secs(60);
        with_call(&weft, "", minute, |c| {
            let pools = c.pools().expect("pools");
            assert_eq!(pools.len(), 1);
            assert_eq!(
                (pools[0].name.as_str(), pools[0].cidr.as_str()),
                ("lan", "10.0.0.0/24")
            );

            c.reserve("10.0.0.30".into(), "kept for the printer".into())
                .expect("reserve");
            c.reserve("10.0.0.30".into(), "kept for the new printer".into())
                .expect("reserving again sets the description");
            let bad = c.reserve("10.0.0.300".into(), "x".into()).unwrap_err();
            assert!(bad.contains("is not an IP address"), "{bad}");
            let taken = c.reserve("10.0.0.20".into(), "mine".into()).unwrap_err();
            assert!(taken.contains("allocated"), "{taken}");
            let forged = c.reserve("10.0.0.31".into(), "a\nb".into()).unwrap_err();
            assert!(forged.contains("control characters"), "{forged}");

            c.upsert_device(ipam::Device {
                id: "ext:1".into(),
                address: "10.0.0.40".into(),
                hostname: Some("web".into()),
                mac: Some("52-54-00-00-00-01".into()),
                platform: None,
                manufacturer: None,
            })
            .expect("device");
            let outside = c
                .upsert_device(ipam::Device {
                    id: "ext:2".into(),
                    address: "192.0.2.1".into(),
                    hostname: None,
                    mac: None,
                    platform: None,
                    manufacturer: None,
                })
                .unwrap_err();
            assert!(outside.contains("not in any pool"), "{outside}");
            let no_id = c
                .upsert_device(ipam::Device {
                    id: String::new(),
                    address: "10.0.0.41".into(),
                    hostname: None,
                    mac: None,
                    platform: None,
                    manufacturer: None,
                })
                .unwrap_err();
            assert!(no_id.contains("empty"), "{no_id}");

            // Records come in address order, a page at a time, with their device.
            let first = c.records("lan".into(), None, 2).expect("page");
            let addresses: Vec<&str> = first.items.iter().map(|r| r.address.as_str()).collect();
            assert_eq!(
                addresses,
                ["10.0.0.1", "10.0.0.20"],
                "the gateway, then alice's"
            );
            let rest = c
                .records("lan".into(), first.next_cursor.clone(), 1000)
                .expect("page");
            let addresses: Vec<&str> = rest.items.iter().map(|r| r.address.as_str()).collect();
            assert_eq!(addresses, ["10.0.0.30", "10.0.0.40"]);
            assert_eq!(rest.next_cursor, None);
            assert_eq!(rest.items[1].device.as_deref(), Some("ext:1"));
            assert_eq!(rest.items[1].mac.as_deref(), Some("52:54:00:00:00:01"));
            assert_eq!(rest.items[0].status, ipam::Status::Reserved);
            assert_eq!(
                c.records("lan".into(), None, 0).expect("page").items.len(),
                1
            );
            assert!(c.records("lan".into(), Some("garbage".into()), 10).is_err());
            assert!(c.records("nope".into(), None, 10).is_err());

            c.note("10.0.0.20".into(), "seen elsewhere".into())
                .expect("note");
            c.release("10.0.0.30".into())
                .expect("release a reservation");
            c.release("10.0.0.30".into())
                .expect("releasing again changes nothing");
            c.delete_device("ext:1".into()).expect("delete");
        });
        assert_eq!(
            weft.record("10.0.0.30").status,
            crate::ipam::Status::Available
        );
        assert_eq!(
            weft.record("10.0.0.40").status,
            crate::ipam::Status::Available
        );
        let history = weft
            .store
            .read(|r| r.history(ip("10.0.0.20")))
            .expect("history");
        let last = history.last().expect("event");
        assert_eq!(
            (last.action.as_str(), last.actor.as_str()),
            ("note: seen elsewhere", "plugin:test-sync")
        );
        assert_eq!(weft.record("10.0.0.20").owner.as_deref(), Some("alice"));
    }

    #[test]
    fn http_reaches_granted_hosts_follows_no_redirect_and_bounds_the_answer() {
        let weft = weft();
        let elsewhere = Fake::start(
            &weft.rt,
            Duration::ZERO,
            Arc::new(|_: &Request| (200, json!({}))),
        );
        let to = format!("{}/stolen", elsewhere.url());
        let location = to.clone();
        let server = Fake::start_raw(
            &weft.rt,
            Duration::ZERO,
            Arc::new(move |r: &Request| match r.path() {
                "/echo" => Raw {
                    status: 200,
                    headers: vec![("X-Answer".into(), "yes".into())],
                    body: json!({"method": r.method, "test": r.header("x-test")})
                        .to_string()
                        .into_bytes(),
                },
                "/redirect" => Raw {
                    status: 302,
                    headers: vec![("Location".into(), location.clone())],
                    body: vec![],
                },
                _ => Raw {
                    status: 200,
                    headers: vec![],
                    body: vec![b'x'; MAX_BODY + 1],
                },
            }),
        );
        let slow = Fake::start(
            &weft.rt,
            Duration::from_secs(5),
            Arc::new(|_: &Request| (200, json!({}))),
        );
        let grants = format!("{}, {}", server.grant(), slow.grant());
        let base = server.url();

        let started = std::time::Instant::now();
        with_call(&weft, &grants, Duration::from_secs(1), |c| {
            let echo = c
                .send(get(&format!("{base}/echo"), &[("X-Test", "1")]))
                .expect("granted");
            assert_eq!(echo.status, 200);
            let body: Value = serde_json::from_slice(&echo.body).expect("json");
            assert_eq!(body, json!({"method": "GET", "test": "1"}));
            assert!(
                echo.headers
                    .iter()
                    .any(|p| p.key == "x-answer" && p.value == "yes")
            );

            let moved = c
                .send(get(&format!("{base}/redirect"), &[]))
                .expect("an answer");
            assert_eq!(moved.status, 302, "handed to the plugin, not followed");

            let big = c.send(get(&format!("{base}/big"), &[])).unwrap_err();
            assert!(big.contains("larger than 16 MiB"), "{big}");

            let mut post = get(&format!("{base}/echo"), &[]);
            post.method = http::Method::Post;
            post.body = Some(vec![0; MAX_BODY + 1]);
            let too_much = c.send(post).unwrap_err();
            assert!(too_much.contains("at most 16 MiB"), "{too_much}");

            let smuggled = c
                .send(get(&format!("{base}/echo"), &[("Host", "evil.example")]))
                .unwrap_err();
            assert!(smuggled.contains("set by weft"), "{smuggled}");

            let refused = c.send(get(&to, &[])).unwrap_err();
            assert!(
                refused.contains("not among the outbound hosts"),
                "{refused}"
            );

            // The call may run one second: a server taking five is given up on in time.
            let late = c.send(get(&slow.url(), &[])).unwrap_err();
            assert!(late.contains("did not answer within"), "{late}");
            let after = c.send(get(&format!("{base}/echo"), &[])).unwrap_err();
            assert!(after.contains("time limit is reached"), "{after}");
        });
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 0);
    }
}
