//! The client's side of a peer: its x25519 keypair and the wg-quick file (with its QR code)
//! handed to it once. Pure text making, no I/O; the one outside input is the OS's randomness
//! for a new key.

use crate::agent_api::PublicKey;
use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::IpAddr;

/// What wg-quick clients behind NAT need to keep their mapping open (the value `wg`'s
/// documentation suggests).
pub const KEEPALIVE_SECS: u16 = 25;

/// A client's private key. Never stored, never logged: `Debug` shows only the public half,
/// and the secret bytes are zeroed when it is dropped (x25519-dalek's `StaticSecret`).
pub struct PrivateKey(x25519_dalek::StaticSecret);

#[derive(Debug, thiserror::Error)]
pub enum KeyGenError {
    /// The operating system gave no randomness: no key can be made safely.
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
}

impl PrivateKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyGenError> {
        use rand::TryRng;
        let mut bytes = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| KeyGenError::Rng(e.to_string()))?;
        // `StaticSecret::from` clamps the scalar as X25519 requires.
        Ok(PrivateKey(x25519_dalek::StaticSecret::from(bytes)))
    }

    /// A key from its bytes (tests, and keys given in a known form).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The key as `wg genkey` prints it.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0.to_bytes())
    }

    /// The raw 32 bytes, as a test searches for them.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(redacted; public {})", self.public_key())
    }
}

/// Everything a client's wg-quick file says.
#[derive(Debug)]
pub struct ClientConfig<'a> {
    /// The client's key; none when the user supplied only a public key (the file then says
    /// where their private key goes).
    pub private_key: Option<&'a PrivateKey>,
    /// The client's public key, named in the file when the private key is not in it.
    pub public_key: PublicKey,
    /// The client's address with the pool's prefix length (or a host prefix).
    pub address: IpNet,
    pub dns: Vec<IpAddr>,
    /// The node's peer interface.
    pub node_public_key: PublicKey,
    /// The node's public host name or address, without the port.
    pub endpoint_host: &'a str,
    pub endpoint_port: u16,
    /// What the client routes through the tunnel: the node's peer pool (and later, meshes).
    pub allowed_ips: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A line break or space would let a host name add lines to the file.
    #[error("endpoint host {0:?} is not a host name or address")]
    BadHost(String),
    #[error("endpoint port 0 is not a port")]
    BadPort,
    #[error("a peer needs at least one allowed IP")]
    NoAllowedIps,
    /// The file is larger than a QR code holds.
    #[error("the configuration is too large for a QR code: {0}")]
    Qr(String),
}

/// Host names, IPv4 and IPv6 literals (bracketed or not): no whitespace, no control
/// characters, nothing wg-quick would read as another field.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
}

/// `host:port`, with an IPv6 literal in brackets as wg-quick needs.
fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The wg-quick file (`wg-quick up ./weft.conf`).
pub fn render(c: &ClientConfig<'_>) -> Result<String, ConfigError> {
    if !valid_host(c.endpoint_host) {
        return Err(ConfigError::BadHost(
            c.endpoint_host.chars().take(80).collect(),
        ));
    }
    if c.endpoint_port == 0 {
        return Err(ConfigError::BadPort);
    }
    if c.allowed_ips.is_empty() {
        return Err(ConfigError::NoAllowedIps);
    }
    // `write!` into a String cannot fail.
    let mut out = String::from("[Interface]\n");
    match c.private_key {
        Some(k) => {
            let _ = writeln!(out, "PrivateKey = {}", k.to_base64());
        }
        None => {
            let _ = writeln!(
                out,
                "# PrivateKey = <the private key whose public key is {}>",
                c.public_key
            );
        }
    }
    let _ = writeln!(out, "Address = {}", c.address);
    if !c.dns.is_empty() {
        let _ = writeln!(out, "DNS = {}", join(&c.dns));
    }
    out.push_str("\n[Peer]\n");
    let _ = writeln!(out, "PublicKey = {}", c.node_public_key);
    let _ = writeln!(
        out,
        "Endpoint = {}",
        endpoint(c.endpoint_host, c.endpoint_port)
    );
    let _ = writeln!(out, "AllowedIPs = {}", join(&c.allowed_ips));
    let _ = writeln!(out, "PersistentKeepalive = {KEEPALIVE_SECS}");
    Ok(out)
}

/// The QR code of `text` as an SVG document (what the WireGuard mobile apps scan).
pub fn qr_svg(text: &str) -> Result<String, ConfigError> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| ConfigError::Qr(e.to_string()))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::from_bytes([7; 32])
    }

    fn config<'a>(k: Option<&'a PrivateKey>, host: &'a str) -> ClientConfig<'a> {
        ClientConfig {
            private_key: k,
            public_key: key().public_key(),
            address: "10.8.0.2/24".parse().unwrap(),
            dns: vec![],
            node_public_key: PublicKey([9; 32]),
            endpoint_host: host,
            endpoint_port: 51820,
            allowed_ips: vec!["10.8.0.0/24".parse().unwrap()],
        }
    }

    #[test]
    fn the_keypair_matches_what_wg_pubkey_computes() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let sk = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap();
        let k = PrivateKey::from_bytes(sk.try_into().unwrap());
        assert_eq!(
            hex::encode(k.public_key().0),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn generated_keys_differ_and_debug_hides_them() {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.to_base64()), "{shown}");
        assert!(shown.contains(&a.public_key().to_base64()));
    }

    #[test]
    fn the_wg_quick_file_of_a_generated_key() {
        let k = key();
        let text = render(&ClientConfig {
            dns: vec!["10.8.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            ..config(Some(&k), "vpn.example.net")
        })
        .unwrap();
        assert_eq!(
            text,
            format!(
                "[Interface]\n\
                 PrivateKey = {}\n\
                 Address = 10.8.0.2/24\n\
                 DNS = 10.8.0.1, fd00::1\n\
                 \n\
                 [Peer]\n\
                 PublicKey = CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n\
                 Endpoint = vpn.example.net:51820\n\
                 AllowedIPs = 10.8.0.0/24\n\
                 PersistentKeepalive = 25\n",
                k.to_base64()
            )
        );
        assert_eq!(
            k.to_base64(),
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
        );
    }

    #[test]
    fn a_supplied_public_key_leaves_the_private_key_to_the_user() {
        let text = render(&config(None, "2001:db8::1")).unwrap();
        assert_eq!(
            text,
            format!(
                "[Interface]\n\
                 # PrivateKey = <the private key whose public key is {}>\n\
                 Address = 10.8.0.2/24\n\
                 \n\
                 [Peer]\n\
                 PublicKey = CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n\
                 Endpoint = [2001:db8::1]:51820\n\
                 AllowedIPs = 10.8.0.0/24\n\
                 PersistentKeepalive = 25\n",
                key().public_key()
            )
        );
        assert!(!text.contains(&key().to_base64()));
    }

    #[test]
    fn a_host_cannot_add_lines_to_the_file() {
        for host in ["", "a b", "vpn\nPostUp = rm -rf /", "x=y"] {
            assert!(matches!(
                render(&config(None, host)),
                Err(ConfigError::BadHost(_))
            ));
        }
        let mut c = config(None, "vpn");
        c.endpoint_port = 0;
        assert_eq!(render(&c), Err(ConfigError::BadPort));
        c.endpoint_port = 1;
        c.allowed_ips.clear();
        assert_eq!(render(&c), Err(ConfigError::NoAllowedIps));
    }

    #[test]
    fn the_qr_code_is_an_svg_document() {
        let k = key();
        let text = render(&config(Some(&k), "vpn.example.net")).unwrap();
        let svg = qr_svg(&text).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        // The same text gives the same code.
        assert_eq!(svg, qr_svg(&text).unwrap());
        assert!(matches!(qr_svg(&"x".repeat(8000)), Err(ConfigError::Qr(_))));
    }
}
