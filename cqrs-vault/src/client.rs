//! The HTTP client: login, token renewal, requests.

use std::fmt;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{Auth, RetryOptions, VaultConfig};
use crate::error::{Result, VaultError};
use crate::metrics::VaultMetrics;
use cqrs_core::Secret;

/// What the client knows about its current token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Increases at every (re-)login: leases obtained with an older generation die with
    /// their token.
    pub generation: u64,
    /// When the token expires, `None` for a token without TTL (a root token).
    pub expires_at: Option<Instant>,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// The server refused to extend it as far as asked: it reaches its maximum TTL at
    /// `expires_at`.
    pub capped: bool,
}

struct TokenState {
    token: Secret,
    info: TokenInfo,
    /// TTL granted at login (the increment asked at each renewal).
    ttl: Option<Duration>,
    renewed_at: Instant,
}

struct Inner {
    http: reqwest::Client,
    address: String,
    namespace: Option<String>,
    auth: Auth,
    retry: RetryOptions,
    renew_fraction: f64,
    metrics: VaultMetrics,
    token: RwLock<TokenState>,
    token_tx: watch::Sender<TokenInfo>,
    login_lock: tokio::sync::Mutex<()>,
}

/// A client of one Vault/OpenBao server, logged in. Clones share the token, the metrics
/// and the background task that renews the token (which stops when the last clone is
/// dropped).
///
/// The token is renewed after 2/3 of its TTL; an AppRole client logs in again when the
/// token cannot be extended any more (maximum TTL) or was revoked. While Vault is
/// unreachable the current token is kept, renewals are retried with backoff, a warning
/// is logged and [`VaultMetrics::unreachable`] counts the failures.
///
/// ```no_run
/// use cqrs_vault::{Auth, VaultClient, VaultConfig};
///
/// # async fn run() -> Result<(), cqrs_vault::VaultError> {
/// let config = VaultConfig::new(
///     "http://127.0.0.1:8200",
///     Auth::approle_files("/work/main/.stack/vault/approle/orders"),
/// );
/// let vault = VaultClient::connect(config).await?;
/// let secret = vault.read("secret/data/cqrs/orders/mongodb").await?;
/// # let _ = secret;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VaultClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("address", &self.inner.address)
            .field("namespace", &self.inner.namespace)
            .field("auth", &self.inner.auth)
            .field("token", &self.token_info())
            .finish()
    }
}

impl VaultClient {
    /// Builds the HTTP client, logs in (AppRole) or looks up the token, and starts the
    /// token renewal in the background (needs a Tokio runtime).
    ///
    /// # Errors
    /// [`VaultError::Config`] for a bad address or CA file, [`VaultError::Unreachable`] /
    /// [`VaultError::Refused`] when the login fails.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), cqrs_vault::VaultError> {
    /// let vault = cqrs_vault::VaultClient::connect(cqrs_vault::VaultConfig::from_env()?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: VaultConfig) -> Result<Self> {
        Self::connect_with_metrics(config, VaultMetrics::default()).await
    }

    /// Like [`VaultClient::connect`], counting into existing metrics.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), cqrs_vault::VaultError> {
    /// let metrics = cqrs_vault::VaultMetrics::default();
    /// let vault = cqrs_vault::VaultClient::connect_with_metrics(
    ///     cqrs_vault::VaultConfig::from_env()?, metrics.clone()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_metrics(config: VaultConfig, metrics: VaultMetrics) -> Result<Self> {
        if !(config.address.starts_with("http://") || config.address.starts_with("https://")) {
            return Err(VaultError::Config(
                "the Vault address must start with http:// or https://".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .user_agent(concat!("cqrs-vault/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                VaultError::Config(format!("cannot read the CA file {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                VaultError::Config(format!("cannot parse the CA file {}: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(VaultError::Config(format!(
                    "the CA file {} holds no certificate",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| VaultError::Config(format!("cannot build the HTTP client: {e}")))?;
        let initial = TokenInfo {
            generation: 0,
            expires_at: None,
            renewable: false,
            capped: false,
        };
        let (token_tx, _) = watch::channel(initial.clone());
        let inner = Arc::new(Inner {
            http,
            address: config.address,
            namespace: config.namespace,
            auth: config.auth,
            retry: config.retry,
            renew_fraction: config.renew_fraction,
            metrics,
            token: RwLock::new(TokenState {
                token: Secret::default(),
                info: initial,
                ttl: None,
                renewed_at: Instant::now(),
            }),
            token_tx,
            login_lock: tokio::sync::Mutex::new(()),
        });
        let client = VaultClient { inner };
        client.login(0).await?;
        tokio::spawn(token_task(Arc::downgrade(&client.inner)));
        Ok(client)
    }

    /// The counters of this client.
    pub fn metrics(&self) -> &VaultMetrics {
        &self.inner.metrics
    }

    /// The backoff settings.
    pub fn retry_options(&self) -> RetryOptions {
        self.inner.retry
    }

    /// The server address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// What is known about the current token.
    pub fn token_info(&self) -> TokenInfo {
        self.read_state(|s| s.info.clone())
    }

    /// Notified at every (re-)login and renewal.
    pub fn subscribe_token(&self) -> watch::Receiver<TokenInfo> {
        self.inner.token_tx.subscribe()
    }

    /// The current token, for handing to another Vault client. Never log it.
    pub fn token(&self) -> Secret {
        self.read_state(|s| s.token.clone())
    }

    fn read_state<T>(&self, f: impl FnOnce(&TokenState) -> T) -> T {
        let guard = self
            .inner
            .token
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }

    fn write_state<T>(&self, f: impl FnOnce(&mut TokenState) -> T) -> T {
        let mut guard = self
            .inner
            .token
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Reads `path` (relative to `/v1/`): the JSON answer, `None` for an empty one.
    ///
    /// # Errors
    /// [`VaultError::Refused`] (404 for a missing path), [`VaultError::Unreachable`].
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient) -> Result<(), cqrs_vault::VaultError> {
    /// let health = vault.read("sys/health").await?;
    /// # let _ = health; Ok(()) }
    /// ```
    pub async fn read(&self, path: &str) -> Result<Option<Value>> {
        self.request(Method::GET, path, None).await
    }

    /// Writes `body` to `path` (`POST`, relative to `/v1/`).
    ///
    /// # Errors
    /// As [`VaultClient::read`].
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient) -> Result<(), cqrs_vault::VaultError> {
    /// vault.write("sys/leases/lookup", &serde_json::json!({"lease_id": "database/creds/orders/abc"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write(&self, path: &str, body: &Value) -> Result<Option<Value>> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// Sends a request with the current token; an AppRole client whose token was refused
    /// (403: revoked or expired) logs in again once and retries.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let (token, generation) = self.read_state(|s| (s.token.clone(), s.info.generation));
        match self.send(method.clone(), path, body, Some(&token)).await {
            Err(VaultError::Refused { status: 403, .. })
                if matches!(self.inner.auth, Auth::AppRole { .. }) =>
            {
                tracing::warn!(
                    target: "cqrs_vault",
                    path,
                    "Vault refused the token (revoked or expired); logging in again"
                );
                self.login(generation).await?;
                let token = self.token();
                self.send(method, path, body, Some(&token)).await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&Secret>,
    ) -> Result<Option<Value>> {
        let url = format!("{}/v1/{}", self.inner.address, path);
        let mut request = self.inner.http.request(method, &url);
        if let Some(ns) = &self.inner.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                VaultError::Config("the token contains characters not allowed in a header".into())
            })?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |message: String| {
            self.inner.metrics.unreachable.inc();
            VaultError::Unreachable {
                path: path.to_owned(),
                message,
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| VaultError::Decode {
                    path: path.to_owned(),
                    // serde_json's message names line/column, never the content.
                    message: format!("invalid JSON: {e}"),
                });
        }
        let errors = error_messages(&bytes);
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(unreachable(format!(
                "HTTP {}: {}",
                status.as_u16(),
                errors.join("; ")
            )));
        }
        Err(VaultError::Refused {
            path: path.to_owned(),
            status: status.as_u16(),
            errors,
        })
    }

    /// Logs in again unless another task already did since `seen_generation`.
    async fn login(&self, seen_generation: u64) -> Result<()> {
        let _guard = self.inner.login_lock.lock().await;
        if self.token_info().generation != seen_generation {
            return Ok(());
        }
        match &self.inner.auth {
            Auth::AppRole {
                role_id,
                secret_id,
                mount,
            } => {
                let body = json!({
                    "role_id": role_id.load("role id")?.expose(),
                    "secret_id": secret_id.load("secret id")?.expose(),
                });
                let path = format!("auth/{mount}/login");
                let answer = self.send(Method::POST, &path, Some(&body), None).await?;
                let auth = answer
                    .as_ref()
                    .and_then(|a| a.get("auth"))
                    .ok_or_else(|| decode(&path, "no auth in the login response"))?;
                let token = auth
                    .get("client_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| decode(&path, "no client_token in the login response"))?;
                let ttl = auth
                    .get("lease_duration")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let renewable = auth
                    .get("renewable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.inner.metrics.logins.inc();
                let info = self.set_token(Secret::new(token), ttl, renewable);
                tracing::info!(
                    target: "cqrs_vault",
                    mount = %mount,
                    generation = info.generation,
                    ttl_secs = ttl,
                    renewable,
                    "logged in to Vault with AppRole"
                );
            }
            Auth::Token(source) => {
                let token = source.load("token")?;
                let path = "auth/token/lookup-self";
                let answer = self.send(Method::GET, path, None, Some(&token)).await?;
                let data = answer
                    .as_ref()
                    .and_then(|a| a.get("data"))
                    .ok_or_else(|| decode(path, "no data in the lookup response"))?;
                let ttl = data.get("ttl").and_then(Value::as_u64).unwrap_or(0);
                let renewable = data
                    .get("renewable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let info = self.set_token(token, ttl, renewable);
                tracing::info!(
                    target: "cqrs_vault",
                    generation = info.generation,
                    ttl_secs = ttl,
                    renewable,
                    "using the configured Vault token"
                );
            }
        }
        Ok(())
    }

    fn set_token(&self, token: Secret, ttl_secs: u64, renewable: bool) -> TokenInfo {
        let now = Instant::now();
        let info = self.write_state(|s| {
            s.token = token;
            s.ttl = (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs));
            s.renewed_at = now;
            s.info = TokenInfo {
                generation: s.info.generation + 1,
                expires_at: s.ttl.map(|ttl| now + ttl),
                renewable,
                capped: false,
            };
            s.info.clone()
        });
        self.inner.token_tx.send_replace(info.clone());
        info
    }

    /// Renews the token now (`auth/token/renew-self`, asking for its original TTL again).
    ///
    /// # Errors
    /// [`VaultError::Unreachable`], or [`VaultError::Refused`] when the token cannot be
    /// renewed.
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient) -> Result<(), cqrs_vault::VaultError> {
    /// let info = vault.renew_token().await?;
    /// println!("token valid until {:?}", info.expires_at);
    /// # Ok(()) }
    /// ```
    pub async fn renew_token(&self) -> Result<TokenInfo> {
        let (token, ttl, generation) =
            self.read_state(|s| (s.token.clone(), s.ttl, s.info.generation));
        let Some(ttl) = ttl else {
            return Ok(self.token_info());
        };
        let path = "auth/token/renew-self";
        let body = json!({ "increment": format!("{}s", ttl.as_secs()) });
        let answer = self
            .send(Method::POST, path, Some(&body), Some(&token))
            .await?;
        let auth = answer
            .as_ref()
            .and_then(|a| a.get("auth"))
            .ok_or_else(|| decode(path, "no auth in the renewal response"))?;
        let granted = auth
            .get("lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let renewable = auth
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let now = Instant::now();
        let granted = Duration::from_secs(granted);
        let capped = granted + Duration::from_secs(1) < ttl;
        let info = self.write_state(|s| {
            if s.info.generation != generation {
                return None; // a login happened meanwhile
            }
            s.renewed_at = now;
            s.info.expires_at = Some(now + granted);
            s.info.renewable = renewable;
            s.info.capped = capped;
            Some(s.info.clone())
        });
        let Some(info) = info else {
            return Ok(self.token_info());
        };
        self.inner.metrics.token_renewals.inc();
        self.inner.token_tx.send_replace(info.clone());
        tracing::debug!(
            target: "cqrs_vault",
            granted_secs = granted.as_secs(),
            capped,
            "Vault token renewed"
        );
        Ok(info)
    }

    /// Revokes the client's own token (and with it every lease it obtained). Only for
    /// AppRole clients at shutdown, after the leases were revoked or are no longer needed.
    ///
    /// # Errors
    /// As [`VaultClient::read`].
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient) -> Result<(), cqrs_vault::VaultError> {
    /// vault.revoke_token().await?;
    /// # Ok(()) }
    /// ```
    pub async fn revoke_token(&self) -> Result<()> {
        let token = self.token();
        self.send(
            Method::POST,
            "auth/token/revoke-self",
            Some(&json!({})),
            Some(&token),
        )
        .await?;
        Ok(())
    }

    /// When the background task should act next, and what to do.
    fn plan(&self) -> Plan {
        let approle = matches!(self.inner.auth, Auth::AppRole { .. });
        self.read_state(|s| {
            let (Some(ttl), Some(expires_at)) = (s.ttl, s.info.expires_at) else {
                return Plan::Idle;
            };
            let margin = (ttl / 3).max(Duration::from_secs(1));
            if s.info.renewable && !s.info.capped {
                Plan::Renew(s.renewed_at + ttl.mul_f64(self.inner.renew_fraction))
            } else if approle {
                Plan::Login(expires_at.checked_sub(margin).unwrap_or(s.renewed_at))
            } else {
                Plan::Expires(expires_at)
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Nothing to do until the token changes.
    Idle,
    Renew(Instant),
    Login(Instant),
    /// A token that cannot be renewed nor replaced: warn when it expires.
    Expires(Instant),
}

async fn token_task(weak: Weak<Inner>) {
    let mut token_rx = match weak.upgrade() {
        Some(inner) => inner.token_tx.subscribe(),
        None => return,
    };
    let retry = match weak.upgrade() {
        Some(inner) => inner.retry,
        None => return,
    };
    let mut backoff = Backoff::new(retry);
    let mut retry_at: Option<Instant> = None;
    loop {
        let plan = match weak.upgrade() {
            Some(inner) => VaultClient { inner }.plan(),
            None => return,
        };
        let due = match (plan, retry_at) {
            (_, Some(at)) => Some(at),
            (Plan::Idle, None) => None,
            (Plan::Renew(at) | Plan::Login(at) | Plan::Expires(at), None) => Some(at),
        };
        // Wake on schedule, on a token change (login elsewhere), and at least once a
        // minute to notice that every client was dropped.
        let wake = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        let wake = wake.min(Instant::now() + Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            changed = token_rx.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        let client = VaultClient { inner };
        if due.is_none_or(|at| Instant::now() < at) {
            continue;
        }
        let result = match plan {
            Plan::Idle => continue,
            Plan::Renew(_) => client.renew_token().await.map(|_| ()),
            Plan::Login(_) => {
                let generation = client.token_info().generation;
                client.login(generation).await
            }
            Plan::Expires(_) => {
                tracing::warn!(
                    target: "cqrs_vault",
                    "the configured Vault token expires now and cannot be renewed; configure AppRole to log in again"
                );
                retry_at = None;
                // Nothing more to do until the token changes (or every client is gone).
                drop(client);
                if token_rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        match result {
            Ok(()) => {
                backoff.reset();
                retry_at = None;
            }
            Err(e) if e.is_unreachable() => {
                let delay = backoff.next_delay();
                let expires_in = client
                    .token_info()
                    .expires_at
                    .map(|at| at.saturating_duration_since(Instant::now()).as_secs());
                tracing::warn!(
                    target: "cqrs_vault",
                    error = %e,
                    attempt = backoff.attempts(),
                    retry_in_ms = delay.as_millis() as u64,
                    token_expires_in_secs = expires_in,
                    "Vault unreachable while renewing the token; keeping the current token"
                );
                retry_at = Some(Instant::now() + delay);
            }
            Err(e) => {
                // Refused: the token cannot be renewed (revoked, expired, max TTL).
                let generation = client.token_info().generation;
                let relogin = if matches!(client.inner.auth, Auth::AppRole { .. }) {
                    client.login(generation).await
                } else {
                    Err(e)
                };
                match relogin {
                    Ok(()) => {
                        backoff.reset();
                        retry_at = None;
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            target: "cqrs_vault",
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "cannot renew the Vault token"
                        );
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
        }
    }
}

fn decode(path: &str, message: &str) -> VaultError {
    VaultError::Decode {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// The error chain of a reqwest failure, without the URL (which carries no secret, but
/// the path is already in the error).
fn describe(err: &reqwest::Error) -> String {
    let mut out = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    let mut depth = 0;
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
        depth += 1;
        if depth > 4 {
            break;
        }
    }
    out
}

/// Vault's `{"errors": [...]}`, each message shortened.
fn error_messages(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors").cloned())
        .and_then(|e| e.as_array().cloned())
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.chars().take(300).collect())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_messages(br#"{"errors":["permission denied"]}"#),
            vec!["permission denied".to_owned()]
        );
        assert!(error_messages(b"<html>").is_empty());
    }
}
