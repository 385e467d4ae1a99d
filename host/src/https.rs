//! HTTPS for weft's two HTTP edges — `weft serve` and `weft agent` — with rustls (through
//! axum-server): load a certificate chain and its key (PEM), serve a router over them, and
//! on shutdown give in-flight requests up to 30 s to finish, as over plain HTTP.

use axum::Router;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum_server::tls_rustls::RustlsConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight requests may take to finish once shutdown begins.
const GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {cert} or key {key}: {source}")]
pub struct TlsError {
    cert: String,
    key: String,
    source: std::io::Error,
}

/// The certificate chain and key, read and checked now (so a bad one stops the process at
/// start, naming the files).
pub async fn load(cert: &Path, key: &Path) -> Result<RustlsConfig, TlsError> {
    RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|source| TlsError {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            source,
        })
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    tls: RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.graceful_shutdown(Some(GRACE));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, tls)?
        .handle(handle)
        .serve(app)
        .await
}

/// The certificates in a PEM bundle (a private CA to trust), or why not.
pub fn read_roots(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
}
