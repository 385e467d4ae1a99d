//! The WireGuard cross-platform userspace API (wireguard.com/xplatform) on
//! `/var/run/wireguard/<interface>.sock`, so that `wg show` and `wg set` from wireguard-tools
//! work on weft's interfaces. The socket is root's alone (0600); its `get` answer carries the
//! private key because that is how `wg` learns the public one — it never leaves the node.

use super::DataPlane;
use crate::agent_api::PublicKey;
use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Where wireguard-tools looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// What `get=1` reports of one peer.
pub struct PeerInfo {
    pub key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    /// Unix time of the last handshake; none if never.
    pub last_handshake: Option<Duration>,
    pub rx: u64,
    pub tx: u64,
    pub keepalive: Option<u16>,
}

/// The answer to `get=1`, ending with `errno=0` and the empty line.
pub fn format_get(private_key: &[u8; 32], listen_port: u16, peers: &[PeerInfo]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "private_key={}", hex::encode(private_key));
    let _ = writeln!(out, "listen_port={listen_port}");
    for p in peers {
        let _ = writeln!(out, "public_key={}", hex::encode(p.key.0));
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        let hs = p.last_handshake.unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", hs.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", hs.subsec_nanos());
        let _ = writeln!(out, "rx_bytes={}", p.rx);
        let _ = writeln!(out, "tx_bytes={}", p.tx);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.keepalive.unwrap_or(0)
        );
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
        let _ = writeln!(out, "protocol_version=1");
    }
    out.push_str("errno=0\n\n");
    out
}

/// One peer's change in a `set=1`.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerChange {
    pub key: PublicKey,
    pub remove: bool,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpNet>,
    pub keepalive: Option<u16>,
    pub endpoint: Option<SocketAddr>,
}

/// A parsed `set=1`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetRequest {
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

/// Why a `set` is refused: its errno.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub i32);

const EINVAL: i32 = 22;
const EPERM: i32 = 1;

/// Parses the lines of a `set=1` (after the `set=1` line, up to the empty line).
pub fn parse_set(lines: &[String]) -> Result<SetRequest, Refused> {
    let mut req = SetRequest::default();
    for line in lines {
        let (k, v) = line.split_once('=').ok_or(Refused(EINVAL))?;
        match (k, req.peers.last_mut()) {
            ("public_key", _) => {
                let mut key = [0u8; 32];
                hex::decode_to_slice(v, &mut key).map_err(|_| Refused(EINVAL))?;
                req.peers.push(PeerChange {
                    key: PublicKey(key),
                    remove: false,
                    replace_allowed_ips: false,
                    allowed_ips: Vec::new(),
                    keepalive: None,
                    endpoint: None,
                });
            }
            // The node's keys are its own: they are not set from outside.
            ("private_key", None) => return Err(Refused(EPERM)),
            ("replace_peers", None) => req.replace_peers = v == "true",
            ("fwmark", None) if v == "0" => {}
            // The port is the controller's to set (PUT /v1/interface).
            ("listen_port", None) => return Err(Refused(EPERM)),
            ("remove", Some(p)) => p.remove = v == "true",
            ("update_only", Some(_)) => {}
            ("replace_allowed_ips", Some(p)) => p.replace_allowed_ips = v == "true",
            ("allowed_ip", Some(p)) => p
                .allowed_ips
                .push(v.parse::<IpNet>().map_err(|_| Refused(EINVAL))?.trunc()),
            ("persistent_keepalive_interval", Some(p)) => {
                let k: u16 = v.parse().map_err(|_| Refused(EINVAL))?;
                p.keepalive = (k > 0).then_some(k);
            }
            ("endpoint", Some(p)) => {
                p.endpoint = Some(v.parse().map_err(|_| Refused(EINVAL))?);
            }
            ("protocol_version", Some(_)) if v == "1" => {}
            ("preshared_key", Some(_)) if v.bytes().all(|b| b == b'0') => {}
            _ => return Err(Refused(EINVAL)),
        }
    }
    Ok(req)
}

/// The socket path of `iface`.
pub fn socket_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{iface}.sock"))
}

/// A bound UAPI socket; removes its file when dropped.
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `<dir>/<iface>.sock` (replacing a stale one) and serves it; `dir` is
/// [`SOCKET_DIR`] unless the agent was told otherwise.
pub fn serve(plane: Arc<DataPlane>, dir: &Path, iface: &str) -> std::io::Result<Server> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let path = socket_path(dir, iface);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let iface = iface.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (plane, iface) = (plane.clone(), iface.clone());
            tokio::spawn(async move {
                if let Err(e) = connection(plane, &iface, stream).await {
                    tracing::debug!(iface = %iface, error = %e, "UAPI connection ended");
                }
            });
        }
    });
    Ok(Server { path, task })
}

async fn connection(
    plane: Arc<DataPlane>,
    iface: &str,
    stream: tokio::net::UnixStream,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(op) = lines.next_line().await? {
        match op.as_str() {
            "get=1" => {
                // The request ends with an empty line.
                while let Some(l) = lines.next_line().await? {
                    if l.is_empty() {
                        break;
                    }
                }
                let answer = plane.uapi_get(iface).await;
                write.write_all(answer.as_bytes()).await?;
            }
            "set=1" => {
                let mut body = Vec::new();
                while let Some(l) = lines.next_line().await? {
                    if l.is_empty() {
                        break;
                    }
                    if body.len() < 100_000 {
                        body.push(l);
                    }
                }
                let errno = match parse_set(&body) {
                    Ok(req) => plane.uapi_set(iface, req).await,
                    Err(Refused(errno)) => errno,
                };
                write
                    .write_all(format!("errno={errno}\n\n").as_bytes())
                    .await?;
            }
            "" => {}
            _ => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_answers_in_the_order_and_units_wg_reads() {
        let peers = [PeerInfo {
            key: PublicKey([0xab; 32]),
            endpoint: Some("192.0.2.7:51820".parse().unwrap()),
            allowed_ips: vec!["10.8.0.2/32".parse().unwrap()],
            last_handshake: Some(Duration::new(1_800_000_000, 5)),
            rx: 1000,
            tx: 2000,
            keepalive: Some(25),
        }];
        let text = format_get(&[1; 32], 51820, &peers);
        let ab = "ab".repeat(32);
        let expected = format!(
            "private_key={}\nlisten_port=51820\npublic_key={ab}\nendpoint=192.0.2.7:51820\n\
             last_handshake_time_sec=1800000000\nlast_handshake_time_nsec=5\nrx_bytes=1000\n\
             tx_bytes=2000\npersistent_keepalive_interval=25\nallowed_ip=10.8.0.2/32\n\
             protocol_version=1\nerrno=0\n\n",
            "01".repeat(32)
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn a_peer_never_seen_reports_a_zero_handshake_not_an_old_one() {
        let peers = [PeerInfo {
            key: PublicKey([1; 32]),
            endpoint: None,
            allowed_ips: vec![],
            last_handshake: None,
            rx: 0,
            tx: 0,
            keepalive: None,
        }];
        let text = format_get(&[1; 32], 1, &peers);
        assert!(text.contains("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"));
        assert!(!text.contains("endpoint="));
    }

    #[test]
    fn set_reads_what_wg_set_sends_and_refuses_keys_and_nonsense() {
        let key = "cd".repeat(32);
        let lines: Vec<String> = [
            format!("public_key={key}"),
            "replace_allowed_ips=true".into(),
            "allowed_ip=10.8.0.3/32".into(),
            "persistent_keepalive_interval=25".into(),
            "endpoint=192.0.2.9:4000".into(),
        ]
        .into_iter()
        .collect();
        let req = parse_set(&lines).unwrap();
        assert_eq!(req.peers.len(), 1);
        let p = &req.peers[0];
        assert_eq!(p.key, PublicKey([0xcd; 32]));
        assert!(p.replace_allowed_ips && !p.remove);
        assert_eq!(p.allowed_ips, vec!["10.8.0.3/32".parse::<IpNet>().unwrap()]);
        assert_eq!(p.keepalive, Some(25));
        let remove = parse_set(&[format!("public_key={key}"), "remove=true".into()]).unwrap();
        assert!(remove.peers[0].remove);
        assert_eq!(
            parse_set(&[format!("private_key={key}")]),
            Err(Refused(EPERM))
        );
        assert_eq!(parse_set(&["bogus".into()]), Err(Refused(EINVAL)));
        assert_eq!(
            parse_set(&["allowed_ip=10.0.0.0/8".into()]),
            Err(Refused(EINVAL))
        );
    }

    proptest::proptest! {
        /// Whatever a local client writes to the socket, `set` parses it or refuses it with
        /// an errno, and the allowed IPs it takes have no host bits.
        #[test]
        fn any_set_is_parsed_or_refused_never_a_panic(
            lines in proptest::collection::vec("[a-z_]{0,30}(=[ -~]{0,70})?", 0..12),
            key in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let mut all: Vec<String> = key.map(|k| format!("public_key={k}")).into_iter().collect();
            all.extend(lines);
            if let Ok(req) = parse_set(&all) {
                for p in &req.peers {
                    proptest::prop_assert!(p.allowed_ips.iter().all(|n| *n == n.trunc()));
                }
            }
        }
    }
}
