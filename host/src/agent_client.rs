//! The controller's side of the agent protocol: signs each request and refuses any answer
//! whose signature does not verify (docs/agent-protocol.md).

use crate::protocol::{
    HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Nonce, RequestParts,
    ResponseVerifyError, Secret, seal_next_secret, sign_request, verify_response,
};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Largest answer read from an agent.
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Why a call to an agent gave no trusted answer.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The agent could not be reached, or the connection failed.
    #[error("agent unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// The URL built from the agent's base URL and the path is not valid.
    #[error("bad agent URL: {0}")]
    Url(#[from] url::ParseError),
    /// The agent refused the request (an unsigned 401, 413 or 503); `code` is its reason.
    #[error("agent refused the request ({status}: {code})")]
    Refused { status: u16, code: String },
    /// The answer does not verify: forged, altered, or from another node. Not trusted.
    #[error("agent answer not trusted: {0}")]
    Forged(#[from] ResponseVerifyError),
    /// The answer is larger than [`MAX_ANSWER`].
    #[error("agent answer larger than {MAX_ANSWER} bytes")]
    TooLarge,
    /// A verified answer whose body is not what the endpoint documents.
    #[error("agent answer is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A verified answer.
#[derive(Debug)]
pub struct AgentAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl AgentAnswer {
    /// Why the agent refused (a verified answer outside 2xx): `code: message` from its
    /// error body, else the start of the body.
    pub fn refusal(&self) -> String {
        refusal_of(&self.body)
    }
}

/// The reason in a refusal's body.
pub fn refusal_of(body: &[u8]) -> String {
    serde_json::from_slice::<crate::agent_api::AgentErrorBody>(body)
        .map(|b| format!("{}: {}", b.error, b.message))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// A client for one node's agent.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: url::Url,
    node: String,
    /// Shared by every clone, so a rotation switches them all at once: after
    /// [`AgentClient::switch_secret`] no clone signs with the old secret.
    signing: Arc<RwLock<Secret>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("base", &self.base.as_str())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AgentClient {
    pub fn new(
        base: url::Url,
        node: impl Into<String>,
        signing: Secret,
        timeout: Duration,
    ) -> Result<Self, ResponseError> {
        Self::with_roots(base, node, signing, timeout, &[])
    }

    /// [`AgentClient::new`], trusting `roots` (a private CA) for `https://` agents besides
    /// the system's roots.
    pub fn with_roots(
        base: url::Url,
        node: impl Into<String>,
        signing: Secret,
        timeout: Duration,
        roots: &[reqwest::Certificate],
    ) -> Result<Self, ResponseError> {
        let mut http = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would send the signed request somewhere it was not signed for.
            .redirect(reqwest::redirect::Policy::none());
        for root in roots {
            http = http.add_root_certificate(root.clone());
        }
        let http = http.build()?;
        Ok(AgentClient {
            http,
            base,
            node: node.into(),
            signing: Arc::new(RwLock::new(signing)),
        })
    }

    /// The secret requests are signed with now, and the time to sign them with. Read
    /// together under the lock a switch takes: a request signed with the old secret is
    /// stamped no later than the switch, so the agent's cutoff for the old secret (the
    /// commit's timestamp, taken after the switch) covers it.
    fn signing(&self) -> (Secret, i64) {
        let secret = self.signing.read().unwrap_or_else(|p| p.into_inner());
        (secret.clone(), unix_now())
    }

    /// Signs with `secret` from the next request on, in this client and every clone.
    pub fn switch_secret(&self, secret: Secret) {
        *self.signing.write().unwrap_or_else(|p| p.into_inner()) = secret;
    }

    /// Sends a signed request for `path_and_query` (e.g. `/v1/health`) and returns the
    /// answer once its signature has verified.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<AgentAnswer, ResponseError> {
        let (signing, timestamp) = self.signing();
        self.call_signed(&signing, timestamp, method, path_and_query, body)
            .await
    }

    /// [`AgentClient::call`] under `signing`; the answer must come under the same secret,
    /// even if a rotation switches meanwhile.
    async fn call_signed(
        &self,
        signing: &Secret,
        timestamp: i64,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<AgentAnswer, ResponseError> {
        let url = self.base.join(path_and_query)?;
        let nonce = Nonce::random();
        // Sign what goes on the wire: the URL as parsed, which is what reqwest sends.
        let signature = sign_request(
            signing,
            &RequestParts {
                node: &self.node,
                method: method.as_str(),
                path: url.path(),
                query: url.query().unwrap_or(""),
                timestamp,
                nonce,
                body: &body,
            },
        );
        let mut answer = self
            .http
            .request(method, url)
            .header(HEADER_NODE, &self.node)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_NONCE, nonce.to_hex())
            .header(HEADER_SIGNATURE, signature)
            .body(body)
            .send()
            .await?;
        let status = answer.status().as_u16();
        let header = |name| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (node_header, sig) = (header(HEADER_NODE), header(HEADER_SIGNATURE));
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(ResponseError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if sig.is_none() && matches!(status, 401 | 413 | 503) {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(ResponseError::Refused { status, code });
        }
        verify_response(
            signing,
            &self.node,
            nonce,
            status,
            node_header.as_deref(),
            sig.as_deref(),
            &body,
        )?;
        Ok(AgentAnswer { status, body })
    }

    /// The agent's signed health document.
    pub async fn health(&self) -> Result<crate::agent::Health, ResponseError> {
        let answer = self
            .call(reqwest::Method::GET, "/v1/health", Vec::new())
            .await?;
        Ok(serde_json::from_slice(&answer.body)?)
    }

    /// Stages `next` on the agent (`PUT /v1/secret`), sealed under the secret this request
    /// is signed with. From its answer on, the agent accepts both.
    pub async fn stage_secret(&self, next: &Secret) -> Result<AgentAnswer, ResponseError> {
        let (signing, timestamp) = self.signing();
        let sealed = seal_next_secret(&signing, &self.node, next, rand::random());
        let body = serde_json::to_vec(&crate::agent_api::StageSecret { next: sealed })?;
        self.call_signed(
            &signing,
            timestamp,
            reqwest::Method::PUT,
            "/v1/secret",
            body,
        )
        .await
    }

    /// Asks the agent to make the staged secret its only one (`POST /v1/secret/commit`);
    /// signed with it, so call [`AgentClient::switch_secret`] first.
    pub async fn commit_secret(&self) -> Result<AgentAnswer, ResponseError> {
        self.call(reqwest::Method::POST, "/v1/secret/commit", Vec::new())
            .await
    }
}
