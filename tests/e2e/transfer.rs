//! Bytes through a weft mesh arrive whole, in both directions: with the kernel's offloads
//! (a TCP super-segment from the TUN split into packets and sent as UDP GSO runs, received
//! datagrams coalesced again before one TUN write) and with them forced off
//! (`--no-offload`). A 16 MiB TCP transfer each way is compared by SHA-256, and pings cross
//! at the tunnel's MTU, above it (fragmented inside the tunnel) and at the smallest size;
//! with the underlay's MTU below a full datagram, the datagrams themselves are fragmented
//! (underneath) and a transfer still arrives whole.
//! Needs root and namespaces; skips elsewhere.

use crate::churn::uapi;
use crate::netns::{Netns, cannot_run, link};
use crate::pair::{MESH_ID, Subnets, weft_mesh};
use crate::support::WEFT;
use std::time::{Duration, Instant};
use weft::agent_api::mesh_interface;

/// Receives one connection on `ip:port` and prints the byte count and SHA-256 of it.
const SINK: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    h.update(d)
    n += len(d)
print(n, h.hexdigest(), flush=True)
"#;

/// Sends N random bytes to `ip:port` (retrying the connection while the sink starts) and
/// prints the byte count and SHA-256 of what it sent.
const SOURCE: &str = r#"
import hashlib, os, socket, sys, time
data = os.urandom(int(sys.argv[3]))
deadline = time.time() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
c.sendall(data)
c.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

const BYTES: usize = 16 << 20;

/// Sends `BYTES` from `from` to `to_ip` (an address of `to`), and checks what arrived is what
/// was sent, by count and SHA-256.
pub fn transfer(from: &Netns, to: &mut Netns, to_ip: &str, dir: &std::path::Path, tag: &str) {
    let log = dir.join(format!("sink-{tag}.log"));
    let sink = to.spawn(&["python3", "-c", SINK, to_ip, "5201"], &[], &log);
    let sent = from.exec(&["python3", "-c", SOURCE, to_ip, "5201", &BYTES.to_string()]);
    let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if to.exited(sink).is_some() || Instant::now() > deadline {
            break text.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(received, sent, "{tag}: what arrived is not what was sent");
    assert!(sent.starts_with(&BYTES.to_string()), "{sent}");
}

/// Pings of `size` bytes of payload from `from` to `ip`: all three answered.
fn ping(from: &Netns, ip: &str, size: usize, forbid_fragments: bool) {
    let size = size.to_string();
    let mut args = vec!["ping", "-c", "3", "-i", "0.05", "-W", "2", "-s", &size];
    if forbid_fragments {
        args.extend(["-M", "do"]);
    }
    args.push(ip);
    let out = from.try_exec(&args);
    assert!(
        out.status.success(),
        "ping -s {size} {ip}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

async fn bytes_arrive_whole(offload: bool, subnets: Subnets) {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = if offload { "on" } else { "off" };
    let mut a = Netns::new(&format!("xa{tag}"));
    let mut b = Netns::new(&format!("xb{tag}"));
    let (veth_a, veth_b) = link(
        Some(&a),
        &format!("{}/30", subnets.underlay(0)),
        &b,
        &format!("{}/30", subnets.underlay(1)),
    );
    let extra: &[&str] = if offload { &[] } else { &["--no-offload"] };
    weft_mesh(WEFT, [&mut a, &mut b], dir.path(), &subnets, extra).await;
    let (ip_a, ip_b) = (subnets.overlay(0), subnets.overlay(1));

    // The first ping waits for the handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a
        .try_exec(&["ping", "-c", "1", "-W", "1", &ip_b])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "no path through the mesh");
    }
    // 1392 bytes of ICMP payload make a 1420-byte packet: exactly the tunnel's MTU.
    ping(&a, &ip_b, 1392, true);
    ping(&a, &ip_b, 4000, false);
    ping(&b, &ip_a, 0, false);

    transfer(&a, &mut b, &ip_b, dir.path(), &format!("{tag}-a-to-b"));
    transfer(&b, &mut a, &ip_a, dir.path(), &format!("{tag}-b-to-a"));

    // Fragmented underneath: with the underlay's MTU below a full WireGuard datagram (1420
    // bytes inside, 1480 on the wire), the kernel fragments the UDP datagrams and the far
    // side's reassembles them; the tunnel's MTU stays what it was.
    a.exec(&["ip", "link", "set", &veth_a, "mtu", "1280"]);
    b.exec(&["ip", "link", "set", &veth_b, "mtu", "1280"]);
    ping(&a, &ip_b, 1392, true);
    transfer(&a, &mut b, &ip_b, dir.path(), &format!("{tag}-fragmented"));
    a.exec(&["ip", "link", "set", &veth_a, "mtu", "1500"]);
    b.exec(&["ip", "link", "set", &veth_b, "mtu", "1500"]);

    // A mesh's peers are the controller's: `wg set` on its interface is refused (EPERM) and
    // changes nothing.
    let sock = dir.path().join(format!(
        "pair{}-0-uapi/{}.sock",
        subnets.overlay,
        mesh_interface(MESH_ID)
    ));
    let before = uapi(&sock, "get=1\n\n");
    let peer = before
        .iter()
        .find(|l| l.starts_with("public_key="))
        .expect("the mesh has a peer");
    assert_eq!(
        uapi(&sock, &format!("set=1\n{peer}\nremove=true\n\n")),
        ["errno=1"]
    );
    let after = uapi(&sock, "get=1\n\n");
    assert!(after.contains(peer), "the peer is still there: {after:?}");
    ping(&a, &ip_b, 0, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_through_a_mesh_arrive_whole_with_offloads() {
    let subnets = Subnets {
        control: 230,
        underlay: 231,
        overlay: 232,
    };
    bytes_arrive_whole(true, subnets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_through_a_mesh_arrive_whole_with_offloads_forced_off() {
    let subnets = Subnets {
        control: 233,
        underlay: 234,
        overlay: 235,
    };
    bytes_arrive_whole(false, subnets).await;
}
