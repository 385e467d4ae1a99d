//! `weft agent join`: enrol this node with a join token. The node's keys are made here and
//! stay here; the controller answers with the node's id and shared secret, which go to
//! `DATA_DIR/secret` (0600) before the agent starts. The token and the secret cross the
//! network only over HTTPS, unless `--insecure` says otherwise (with a warning).

use crate::cli::JoinArgs;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "refusing to send the join token to {0} over plain HTTP: use https://, or --insecure to accept that the token and the node's secret cross the network in clear"
    )]
    PlainHttp(String),
    #[error("controller URL {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("CA file {path}: {why}")]
    Ca { path: String, why: String },
    #[error("cannot reach the controller at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("the controller refused to enrol this node ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the controller's answer is not an enrolment: {0}")]
    BadAnswer(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What enrolment gave.
#[derive(Debug)]
pub struct Joined {
    pub secret_file: PathBuf,
    pub overlay_address: Option<String>,
}

/// The endpoint as host and WireGuard port.
fn endpoint(s: &str) -> (String, u16) {
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return (sa.ip().to_string(), sa.port());
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => {
            (h.to_string(), p.parse().unwrap_or(51820))
        }
        _ => (s.trim_matches(['[', ']']).to_string(), 51820),
    }
}

/// Enrols the node and writes its secret.
pub async fn join(args: &JoinArgs) -> Result<Joined, JoinError> {
    let base = url::Url::parse(&args.url).map_err(|_| JoinError::BadUrl(args.url.clone()))?;
    match base.scheme() {
        "https" => {}
        "http" if args.insecure => tracing::warn!(
            controller = %base,
            "--insecure: the join token and this node's secret cross the network in clear"
        ),
        "http" => return Err(JoinError::PlainHttp(args.url.clone())),
        _ => return Err(JoinError::BadUrl(args.url.clone())),
    }
    let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(path) = &args.ca {
        let ca_err = |why: String| JoinError::Ca {
            path: path.display().to_string(),
            why,
        };
        let roots = crate::https::read_roots(path).map_err(ca_err)?;
        // Pinned: only this CA, not the system's roots.
        http = http.tls_certs_only(roots);
    }
    let http = http
        .build()
        .map_err(|e| JoinError::BadAnswer(e.to_string()))?;
    let (host, port) = endpoint(&args.endpoint);
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let agent_url = args.agent_url.clone().unwrap_or_else(|| {
        let h = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        format!("{scheme}://{h}:{}/", args.listen.port())
    });
    let url = base
        .join("api/v1/enroll")
        .map_err(|_| JoinError::BadUrl(args.url.clone()))?;
    let body = serde_json::json!({
        "token": args.token,
        "name": args.name,
        "agent_url": agent_url,
        "endpoint_host": host,
        "listen_port": port,
    });
    let answer = http
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| JoinError::Unreachable {
            url: url.to_string(),
            why: crate::error_chain(&e),
        })?;
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status != 201 {
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        return Err(JoinError::Refused { status, message });
    }
    let secret = v["secret"]
        .as_str()
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| JoinError::BadAnswer(v.to_string().chars().take(200).collect()))?;
    write_secret(&args.data_dir, secret)?;
    Ok(Joined {
        secret_file: args.data_dir.join(crate::agent::SECRET_FILE),
        overlay_address: v["overlay_address"].as_str().map(str::to_owned),
    })
}

/// DATA_DIR/secret, mode 0600 from the moment it exists.
fn write_secret(dir: &std::path::Path, secret: &str) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |path: PathBuf| move |source| JoinError::Write { path, source };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir.to_path_buf()))?;
    let path = dir.join(crate::agent::SECRET_FILE);
    // A rotation left half done before must not keep its staged secret valid.
    crate::agent::SecretFile::new(&path)
        .forget_staged()
        .map_err(err(path.clone()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(err(path.clone()))?;
    f.write_all(secret.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_a_host_with_an_optional_port() {
        assert_eq!(
            endpoint("vpn.example.net"),
            ("vpn.example.net".into(), 51820)
        );
        assert_eq!(
            endpoint("vpn.example.net:51900"),
            ("vpn.example.net".into(), 51900)
        );
        assert_eq!(endpoint("192.0.2.1:51900"), ("192.0.2.1".into(), 51900));
        assert_eq!(
            endpoint("[2001:db8::1]:51900"),
            ("2001:db8::1".into(), 51900)
        );
        assert_eq!(endpoint("2001:db8::1"), ("2001:db8::1".into(), 51820));
    }
}
