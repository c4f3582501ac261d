//! KV v2 secrets watched for new versions.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::client::VaultClient;
use crate::error::{Result, VaultError};
use cqrs_core::Secret;

/// How a [`KvSecret`] is watched.
///
/// ```
/// use cqrs_vault::KvOptions;
/// use std::time::Duration;
///
/// let options = KvOptions { poll_interval: Duration::from_secs(5), ..KvOptions::default() };
/// assert_eq!(options.mount, "secret");
/// ```
#[derive(Debug, Clone)]
pub struct KvOptions {
    /// Mount path of the KV v2 engine.
    pub mount: String,
    /// How often the secret's current version is checked (default 30 s).
    pub poll_interval: Duration,
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            mount: "secret".into(),
            poll_interval: Duration::from_secs(30),
        }
    }
}

/// One version of a KV v2 secret. Every value is a [`Secret`]; `Debug` shows the
/// version and the keys only.
///
/// ```
/// use cqrs_vault::KvVersion;
///
/// let v = KvVersion::from_pairs(3, [("username", "svc"), ("password", "pw")]);
/// assert_eq!(v.get("username").map(|s| s.expose()), Some("svc"));
/// assert!(!format!("{v:?}").contains("pw\""));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KvVersion {
    /// The version number.
    pub version: u64,
    data: BTreeMap<String, Secret>,
}

impl KvVersion {
    /// Builds a version by hand (for tests and static configuration).
    pub fn from_pairs<K: Into<String>, V: Into<Secret>>(
        version: u64,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        KvVersion {
            version,
            data: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key` (non-string values are kept as their JSON text).
    pub fn get(&self, key: &str) -> Option<&Secret> {
        self.data.get(key)
    }

    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }
}

impl fmt::Debug for KvVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvVersion")
            .field("version", &self.version)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A KV v2 secret whose new versions are picked up by polling its metadata
/// (`<mount>/metadata/<path>`; the data is read only when the version changed). When
/// the policy does not allow reading metadata, the data is read at each poll instead.
///
/// While Vault is unreachable the last version stays current; each failed poll logs a
/// warning and counts in [`VaultMetrics::unreachable`](crate::VaultMetrics::unreachable).
///
/// ```no_run
/// use cqrs_vault::{KvOptions, KvSecret, VaultClient, VaultConfig};
///
/// # async fn run() -> Result<(), cqrs_vault::VaultError> {
/// let vault = VaultClient::connect(VaultConfig::from_env()?).await?;
/// let secret = KvSecret::start(&vault, "cqrs/orders/mongodb", KvOptions::default()).await?;
/// let mut versions = secret.subscribe();
/// while versions.changed().await.is_ok() {
///     let v = versions.borrow_and_update().clone();
///     println!("secret now at version {}", v.version);
/// }
/// # Ok(()) }
/// ```
pub struct KvSecret {
    path: String,
    rx: watch::Receiver<Arc<KvVersion>>,
    stop: mpsc::Sender<()>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for KvSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvSecret")
            .field("path", &self.path)
            .field("current", &*self.rx.borrow())
            .finish()
    }
}

impl KvSecret {
    /// Reads the current version of `path` (relative to the mount, like
    /// `cqrs/orders/mongodb`) and starts polling for new ones.
    ///
    /// # Errors
    /// When the first read fails.
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient) -> Result<(), cqrs_vault::VaultError> {
    /// let secret = cqrs_vault::KvSecret::start(&vault, "cqrs/orders/mongodb", Default::default()).await?;
    /// let user = secret.current().get("username").cloned();
    /// # Ok(()) }
    /// ```
    pub async fn start(client: &VaultClient, path: &str, options: KvOptions) -> Result<Self> {
        let path = path.trim_matches('/').to_owned();
        if path.is_empty() || path.contains("..") || path.contains(['?', '#']) {
            return Err(VaultError::Config(format!("invalid KV path {path:?}")));
        }
        let first = read_version(client, &options.mount, &path, None).await?;
        client.metrics().kv_versions.inc();
        tracing::info!(
            target: "cqrs_vault",
            mount = %options.mount,
            path = %path,
            version = first.version,
            "read KV secret"
        );
        let (tx, rx) = watch::channel(Arc::new(first));
        let (stop, stop_rx) = mpsc::channel(1);
        let task = tokio::spawn(poll(client.clone(), options, path.clone(), tx, stop_rx));
        Ok(KvSecret {
            path,
            rx,
            stop,
            task: Some(task),
        })
    }

    /// The latest version seen.
    pub fn current(&self) -> Arc<KvVersion> {
        Arc::clone(&self.rx.borrow())
    }

    /// Notified with every new version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<KvVersion>> {
        self.rx.clone()
    }

    /// Stops polling.
    ///
    /// ```no_run
    /// # async fn run(secret: cqrs_vault::KvSecret) {
    /// secret.stop().await;
    /// # }
    /// ```
    pub async fn stop(mut self) {
        let _ = self.stop.send(()).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for KvSecret {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn poll(
    client: VaultClient,
    options: KvOptions,
    path: String,
    tx: watch::Sender<Arc<KvVersion>>,
    mut stop: mpsc::Receiver<()>,
) {
    let mut backoff = Backoff::new(client.retry_options());
    let mut use_metadata = true;
    let mut delay = options.poll_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.recv() => return,
        }
        delay = options.poll_interval;
        let current = tx.borrow().version;
        let latest = if use_metadata {
            match current_version(&client, &options.mount, &path).await {
                Ok(v) => Ok(v),
                Err(VaultError::Refused { status: 403, .. }) => {
                    tracing::debug!(
                        target: "cqrs_vault",
                        path = %path,
                        "no permission to read KV metadata; polling the data instead"
                    );
                    use_metadata = false;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        } else {
            Ok(None)
        };
        let result = match latest {
            Ok(Some(v)) if v == current => Ok(None),
            Ok(Some(v)) => read_version(&client, &options.mount, &path, Some(v))
                .await
                .map(Some),
            Ok(None) => read_version(&client, &options.mount, &path, None)
                .await
                .map(|v| (v.version != current).then_some(v)),
            Err(e) => Err(e),
        };
        match result {
            Ok(Some(version)) => {
                backoff.reset();
                client.metrics().kv_versions.inc();
                tracing::info!(
                    target: "cqrs_vault",
                    path = %path,
                    old_version = current,
                    version = version.version,
                    "new KV secret version"
                );
                tx.send_replace(Arc::new(version));
            }
            Ok(None) => backoff.reset(),
            Err(e) => {
                if e.is_unreachable() {
                    delay = backoff.next_delay().min(options.poll_interval);
                }
                tracing::warn!(
                    target: "cqrs_vault",
                    path = %path,
                    error = %e,
                    version = current,
                    "cannot check the KV secret for a new version; keeping the current one"
                );
            }
        }
    }
}

async fn current_version(client: &VaultClient, mount: &str, path: &str) -> Result<Option<u64>> {
    let api = format!("{mount}/metadata/{path}");
    let answer = client.read(&api).await?;
    Ok(answer
        .as_ref()
        .and_then(|a| a.get("data"))
        .and_then(|d| d.get("current_version"))
        .and_then(Value::as_u64))
}

async fn read_version(
    client: &VaultClient,
    mount: &str,
    path: &str,
    version: Option<u64>,
) -> Result<KvVersion> {
    let api = match version {
        Some(v) => format!("{mount}/data/{path}?version={v}"),
        None => format!("{mount}/data/{path}"),
    };
    let shown = format!("{mount}/data/{path}");
    let answer = client.read(&api).await.map_err(|e| match e {
        VaultError::Refused { status, errors, .. } => VaultError::Refused {
            path: shown.clone(),
            status,
            errors,
        },
        other => other,
    })?;
    let data = answer
        .as_ref()
        .and_then(|a| a.get("data"))
        .ok_or_else(|| VaultError::Decode {
            path: shown.clone(),
            message: "no data (a KV v1 mount, or a deleted version?)".into(),
        })?;
    let version = data
        .get("metadata")
        .and_then(|m| m.get("version"))
        .and_then(Value::as_u64)
        .ok_or_else(|| VaultError::Decode {
            path: shown.clone(),
            message: "no metadata.version".into(),
        })?;
    let values = data
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| VaultError::Decode {
            path: shown.clone(),
            message: "the version holds no data (deleted?)".into(),
        })?;
    Ok(KvVersion {
        version,
        data: values
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), Secret::new(text))
            })
            .collect(),
    })
}
