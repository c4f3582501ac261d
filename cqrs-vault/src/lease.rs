//! Leased database credentials (`database/creds/<role>`): renewed ahead of expiry,
//! replaced before their maximum TTL, revoked when no longer used.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::VaultClient;
use crate::error::{Result, VaultError};
use cqrs_core::Secret;

/// How a [`DatabaseLease`] is kept alive.
///
/// ```
/// use cqrs_vault::LeaseOptions;
/// use std::time::Duration;
///
/// let options = LeaseOptions {
///     revoke_grace: Duration::from_secs(10),
///     ..LeaseOptions::default()
/// };
/// assert_eq!(options.mount, "database");
/// ```
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Mount path of the database secrets engine.
    pub mount: String,
    /// Fraction of the lease duration after which it is renewed (default 2/3).
    pub renew_fraction: f64,
    /// How long a replaced credential stays valid before its lease is revoked, so that
    /// connections opened with it can finish their work and close (default 30 s). Keep it
    /// below a third of the lease TTL.
    pub revoke_grace: Duration,
    /// The role's `max_ttl`, when known: the credential is replaced in time without
    /// waiting for Vault to cap a renewal. Without it the cap is detected at the first
    /// renewal Vault shortens.
    pub max_ttl: Option<Duration>,
    /// How often the lease is looked up to notice a revocation from outside (default
    /// 30 s; `None`: only at renewals and on [`DatabaseLease::request_check`]).
    pub check_interval: Option<Duration>,
    /// Revoke the lease when the [`DatabaseLease`] is shut down or dropped (default true).
    pub revoke_on_shutdown: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            mount: "database".into(),
            renew_fraction: 2.0 / 3.0,
            revoke_grace: Duration::from_secs(30),
            max_ttl: None,
            check_interval: Some(Duration::from_secs(30)),
            revoke_on_shutdown: true,
        }
    }
}

/// One leased database user.
///
/// `Debug` shows the user name and lease duration, never the password or the lease id.
///
/// ```no_run
/// # fn f(creds: &cqrs_vault::DbCredentials) {
/// let user = &creds.username;
/// let password = creds.password.expose(); // hand it to the driver, never log it
/// # let _ = (user, password); }
/// ```
#[derive(Clone)]
pub struct DbCredentials {
    /// The user Vault created.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// Counts the credentials obtained by this lease manager (1 for the first one).
    pub serial: u64,
    /// Lease duration granted at issue.
    pub lease_duration: Duration,
    /// When it was issued.
    pub issued_at: Instant,
    lease_id: Secret,
    token_generation: u64,
}

impl DbCredentials {
    /// The lease id (for revoking it from outside, in tests). Not a password, but not
    /// worth logging either.
    pub fn lease_id(&self) -> &str {
        self.lease_id.expose()
    }
}

impl fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbCredentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("serial", &self.serial)
            .field("lease_duration", &self.lease_duration)
            .finish_non_exhaustive()
    }
}

/// Asks a [`DatabaseLease`]'s background task to look the lease up now
/// ([`DatabaseLease::checker`]); does nothing once the lease was shut down.
///
/// ```no_run
/// # fn f(lease: &cqrs_vault::DatabaseLease) {
/// let check: cqrs_vault::LeaseCheck = lease.checker();
/// check.request();
/// # }
/// ```
#[derive(Clone)]
pub struct LeaseCheck {
    commands: mpsc::UnboundedSender<Command>,
}

impl LeaseCheck {
    /// Same as [`DatabaseLease::request_check`].
    ///
    /// ```no_run
    /// # fn f(check: cqrs_vault::LeaseCheck) { check.request(); }
    /// ```
    pub fn request(&self) {
        let _ = self.commands.send(Command::Check);
    }
}

impl fmt::Debug for LeaseCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseCheck").finish_non_exhaustive()
    }
}

enum Command {
    Rotate(oneshot::Sender<Result<Arc<DbCredentials>>>),
    Check,
    Shutdown(oneshot::Sender<()>),
}

/// Dynamic database credentials from `database/creds/<role>`, kept valid in the
/// background:
///
/// * renewed after 2/3 of the lease duration;
/// * replaced by a new credential before the lease reaches its maximum TTL, when the
///   client logs in again (leases die with the token that created them), or when the
///   lease turns out to be revoked; subscribers ([`DatabaseLease::subscribe`]) see the new
///   credential at once;
/// * the replaced lease is revoked after [`LeaseOptions::revoke_grace`], the current one
///   on [`DatabaseLease::shutdown`] (or, best effort, on drop).
///
/// While Vault is unreachable the current credential is kept until it expires; renewals
/// are retried with backoff, each failure logs a warning and counts in
/// [`VaultMetrics::unreachable`](crate::VaultMetrics::unreachable).
///
/// ```no_run
/// use cqrs_vault::{DatabaseLease, LeaseOptions, VaultClient, VaultConfig};
///
/// # async fn run() -> Result<(), cqrs_vault::VaultError> {
/// let vault = VaultClient::connect(VaultConfig::from_env()?).await?;
/// let lease = DatabaseLease::start(&vault, "orders", LeaseOptions::default()).await?;
/// let mut changes = lease.subscribe();
/// tokio::spawn(async move {
///     while changes.changed().await.is_ok() {
///         let creds = changes.borrow_and_update().clone();
///         println!("now logging in as {}", creds.username);
///     }
/// });
/// // ...
/// lease.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct DatabaseLease {
    role: String,
    rx: watch::Receiver<Arc<DbCredentials>>,
    commands: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for DatabaseLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseLease")
            .field("role", &self.role)
            .field("current", &*self.rx.borrow())
            .finish()
    }
}

impl DatabaseLease {
    /// Obtains a first credential for `role` and starts keeping it valid.
    ///
    /// # Errors
    /// When the first credential cannot be obtained ([`VaultError::Unreachable`],
    /// [`VaultError::Refused`], [`VaultError::Decode`]).
    ///
    /// ```no_run
    /// # async fn run(vault: cqrs_vault::VaultClient) -> Result<(), cqrs_vault::VaultError> {
    /// let lease = cqrs_vault::DatabaseLease::start(&vault, "orders", Default::default()).await?;
    /// println!("{}", lease.current().username);
    /// # Ok(()) }
    /// ```
    pub async fn start(client: &VaultClient, role: &str, options: LeaseOptions) -> Result<Self> {
        if role.is_empty() || role.contains(['/', '?', '#']) || role.contains("..") {
            return Err(VaultError::Config(format!(
                "invalid database role name {role:?}"
            )));
        }
        let mut worker = Worker {
            client: client.clone(),
            role: role.to_owned(),
            options,
            serial: 0,
            retiring: Vec::new(),
            backoff: Backoff::new(client.retry_options()),
        };
        let (creds, lease) = worker.issue().await?;
        let (tx, rx) = watch::channel(Arc::clone(&creds));
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(worker.run(lease, tx, cmd_rx));
        Ok(DatabaseLease {
            role: role.to_owned(),
            rx,
            commands,
            task: Some(task),
        })
    }

    /// The credential to open new connections with.
    pub fn current(&self) -> Arc<DbCredentials> {
        Arc::clone(&self.rx.borrow())
    }

    /// Notified with every new credential.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DbCredentials>> {
        self.rx.clone()
    }

    /// Asks the background task to look the lease up now (call it when the database
    /// refused a login or a session lost its role): a revoked lease is replaced at once.
    pub fn request_check(&self) {
        let _ = self.commands.send(Command::Check);
    }

    /// A cheap, clonable handle that can only ask for a lookup, for code that notices a
    /// dead credential away from the lease (a connection pool's error path).
    ///
    /// ```no_run
    /// # fn f(lease: &cqrs_vault::DatabaseLease) {
    /// let check = lease.checker();
    /// // later, when the database says the session's role is gone:
    /// check.request();
    /// # }
    /// ```
    pub fn checker(&self) -> LeaseCheck {
        LeaseCheck {
            commands: self.commands.clone(),
        }
    }

    /// Replaces the credential now and waits for the new one.
    ///
    /// # Errors
    /// When Vault cannot issue one ([`VaultError::Stopped`] after shutdown).
    ///
    /// ```no_run
    /// # async fn run(lease: cqrs_vault::DatabaseLease) -> Result<(), cqrs_vault::VaultError> {
    /// let fresh = lease.rotate_now().await?;
    /// # let _ = fresh; Ok(()) }
    /// ```
    pub async fn rotate_now(&self) -> Result<Arc<DbCredentials>> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Rotate(tx))
            .map_err(|_| VaultError::Stopped)?;
        rx.await.map_err(|_| VaultError::Stopped)?
    }

    /// Stops the background task and revokes the current lease and those waiting for
    /// revocation (unless [`LeaseOptions::revoke_on_shutdown`] is false).
    ///
    /// # Errors
    /// [`VaultError::Stopped`] when the task had already ended.
    ///
    /// ```no_run
    /// # async fn run(lease: cqrs_vault::DatabaseLease) -> Result<(), cqrs_vault::VaultError> {
    /// lease.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(mut self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(tx))
            .map_err(|_| VaultError::Stopped)?;
        let _ = rx.await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl Drop for DatabaseLease {
    fn drop(&mut self) {
        // The task sees the command channel close and revokes in the background (if the
        // runtime still runs).
        self.task.take();
    }
}

/// The lease being kept alive.
struct Active {
    creds: Arc<DbCredentials>,
    ttl: Duration,
    renewable: bool,
    expires_at: Instant,
    hard_deadline: Option<Instant>,
    next_renew: Instant,
    next_check: Option<Instant>,
    retry_at: Option<Instant>,
    warned_expired: bool,
}

struct Retiring {
    lease_id: Secret,
    username: String,
    revoke_at: Instant,
    expires_at: Instant,
}

struct Worker {
    client: VaultClient,
    role: String,
    options: LeaseOptions,
    serial: u64,
    retiring: Vec<Retiring>,
    backoff: Backoff,
}

impl Worker {
    fn creds_path(&self) -> String {
        format!("{}/creds/{}", self.options.mount, self.role)
    }

    async fn issue(&mut self) -> Result<(Arc<DbCredentials>, Active)> {
        let path = self.creds_path();
        let generation = self.client.token_info().generation;
        let answer = self.client.read(&path).await?;
        let answer = answer.ok_or_else(|| decode(&path, "empty response"))?;
        let field = |name: &str| {
            answer
                .get("data")
                .and_then(|d| d.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let username = field("username").ok_or_else(|| decode(&path, "no data.username"))?;
        let password = field("password").ok_or_else(|| decode(&path, "no data.password"))?;
        let lease_id = answer
            .get("lease_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| decode(&path, "no lease_id"))?
            .to_owned();
        let ttl = Duration::from_secs(
            answer
                .get("lease_duration")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        );
        let renewable = answer
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let now = Instant::now();
        self.serial += 1;
        let creds = Arc::new(DbCredentials {
            username,
            password: Secret::new(password),
            serial: self.serial,
            lease_duration: ttl,
            issued_at: now,
            lease_id: Secret::new(lease_id),
            token_generation: generation,
        });
        let hard_deadline = if !renewable {
            Some(now + ttl)
        } else {
            self.options.max_ttl.map(|max| now + max)
        };
        self.client.metrics().lease_rotations.inc();
        tracing::info!(
            target: "cqrs_vault",
            role = %self.role,
            username = %creds.username,
            serial = creds.serial,
            ttl_secs = ttl.as_secs(),
            renewable,
            "obtained database credentials from Vault"
        );
        let active = Active {
            creds: Arc::clone(&creds),
            ttl,
            renewable,
            expires_at: now + ttl,
            hard_deadline,
            next_renew: now + ttl.mul_f64(self.options.renew_fraction.clamp(0.1, 0.9)),
            next_check: self.options.check_interval.map(|i| now + i),
            retry_at: None,
            warned_expired: false,
        };
        Ok((creds, active))
    }

    /// Time before the hard deadline at which the credential is replaced.
    fn rotate_before(&self, ttl: Duration) -> Duration {
        self.options.revoke_grace + (ttl / 10).max(Duration::from_secs(1))
    }

    fn rotate_at(&self, active: &Active) -> Option<Instant> {
        active.hard_deadline.map(|d| {
            d.checked_sub(self.rotate_before(active.ttl))
                .unwrap_or(active.creds.issued_at)
        })
    }

    async fn run(
        mut self,
        mut active: Active,
        tx: watch::Sender<Arc<DbCredentials>>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut token_rx = self.client.subscribe_token();
        let mut shutdown_ack: Option<oneshot::Sender<()>> = None;
        loop {
            let mut wake = active.retry_at.unwrap_or_else(|| {
                let mut at = if active.renewable {
                    active.next_renew
                } else {
                    active.expires_at
                };
                if let Some(r) = self.rotate_at(&active) {
                    at = at.min(r);
                }
                at
            });
            if let Some(c) = active.next_check {
                wake = wake.min(c);
            }
            if let Some(r) = self.retiring.iter().map(|r| r.revoke_at).min() {
                wake = wake.min(r);
            }
            let mut force = None;
            let mut check = false;
            let mut token_changed = false;
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown(ack)) => { shutdown_ack = Some(ack); break; }
                    Some(Command::Rotate(reply)) => force = Some(reply),
                    Some(Command::Check) => check = true,
                },
                changed = token_rx.changed() => {
                    if changed.is_ok() {
                        let generation = token_rx.borrow_and_update().generation;
                        token_changed = generation != active.creds.token_generation;
                    }
                }
            }
            self.revoke_due().await;
            let now = Instant::now();

            if let Some(reply) = force {
                let result = self.rotate(&mut active, &tx, "requested").await;
                let _ = reply.send(result.map(|()| Arc::clone(&active.creds)));
                continue;
            }
            if token_changed {
                tracing::info!(
                    target: "cqrs_vault",
                    role = %self.role,
                    "the Vault token changed; replacing the credentials it leased"
                );
                self.rotate_or_retry(&mut active, &tx, "new Vault token")
                    .await;
                continue;
            }
            if check || active.next_check.is_some_and(|c| now >= c) {
                active.next_check = self.options.check_interval.map(|i| now + i);
                if self.lease_gone(&active).await {
                    tracing::warn!(
                        target: "cqrs_vault",
                        role = %self.role,
                        username = %active.creds.username,
                        "the database lease was revoked or has expired; obtaining new credentials"
                    );
                    self.rotate_or_retry(&mut active, &tx, "lease revoked")
                        .await;
                    continue;
                }
            }
            if active.retry_at.is_some_and(|r| now < r) {
                continue;
            }
            if self.rotate_at(&active).is_some_and(|r| now >= r) {
                self.rotate_or_retry(&mut active, &tx, "maximum TTL ahead")
                    .await;
                continue;
            }
            if active.renewable && now >= active.next_renew {
                self.renew(&mut active, &tx).await;
            } else if !active.renewable && now >= active.expires_at {
                self.rotate_or_retry(&mut active, &tx, "expired").await;
            }
        }
        // Shutdown (explicit or the handle was dropped).
        if self.options.revoke_on_shutdown {
            let now = Instant::now();
            for r in std::mem::take(&mut self.retiring) {
                if r.expires_at > now {
                    self.revoke(&r.lease_id, &r.username).await;
                }
            }
            let id = active.creds.lease_id.clone();
            let user = active.creds.username.clone();
            self.revoke(&id, &user).await;
        }
        if let Some(ack) = shutdown_ack {
            let _ = ack.send(());
        }
    }

    async fn renew(&mut self, active: &mut Active, tx: &watch::Sender<Arc<DbCredentials>>) {
        let increment = active.ttl.as_secs().max(1);
        let body = json!({
            "lease_id": active.creds.lease_id.expose(),
            "increment": increment,
        });
        match self.client.write("sys/leases/renew", &body).await {
            Ok(answer) => {
                let granted = Duration::from_secs(
                    answer
                        .as_ref()
                        .and_then(|a| a.get("lease_duration"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                );
                let now = Instant::now();
                self.backoff.reset();
                active.retry_at = None;
                active.warned_expired = false;
                active.expires_at = now + granted;
                let capped = granted + Duration::from_secs(1) < active.ttl;
                if capped {
                    let deadline = now + granted;
                    active.hard_deadline =
                        Some(active.hard_deadline.map_or(deadline, |d| d.min(deadline)));
                }
                active.next_renew =
                    now + granted.mul_f64(self.options.renew_fraction.clamp(0.1, 0.9));
                self.client.metrics().lease_renewals.inc();
                tracing::debug!(
                    target: "cqrs_vault",
                    role = %self.role,
                    username = %active.creds.username,
                    granted_secs = granted.as_secs(),
                    capped,
                    "database lease renewed"
                );
                if granted.is_zero() {
                    self.rotate_or_retry(active, tx, "lease not extended").await;
                }
            }
            Err(e) if e.is_unreachable() => self.keep_current(active, &e, "renewing"),
            Err(e) => {
                tracing::warn!(
                    target: "cqrs_vault",
                    role = %self.role,
                    username = %active.creds.username,
                    error = %e,
                    "the database lease cannot be renewed; obtaining new credentials"
                );
                self.rotate_or_retry(active, tx, "renewal refused").await;
            }
        }
    }

    /// Vault unreachable: keep the current credential, retry later.
    fn keep_current(&mut self, active: &mut Active, error: &VaultError, doing: &str) {
        let delay = self.backoff.next_delay();
        let now = Instant::now();
        let valid_for = active.expires_at.saturating_duration_since(now);
        active.retry_at = Some(now + delay);
        if valid_for.is_zero() && !active.warned_expired {
            active.warned_expired = true;
            self.client.metrics().expired_in_use.inc();
            tracing::error!(
                target: "cqrs_vault",
                role = %self.role,
                username = %active.creds.username,
                error = %error,
                "Vault unreachable and the database credentials have expired; new connections will fail until Vault answers"
            );
        } else {
            tracing::warn!(
                target: "cqrs_vault",
                role = %self.role,
                username = %active.creds.username,
                error = %error,
                doing,
                attempt = self.backoff.attempts(),
                retry_in_ms = delay.as_millis() as u64,
                valid_for_secs = valid_for.as_secs(),
                "Vault unreachable; keeping the current database credentials"
            );
        }
    }

    async fn rotate_or_retry(
        &mut self,
        active: &mut Active,
        tx: &watch::Sender<Arc<DbCredentials>>,
        why: &str,
    ) {
        if let Err(e) = self.rotate(active, tx, why).await {
            if e.is_unreachable() {
                self.keep_current(active, &e, "obtaining new credentials");
            } else {
                let delay = self.backoff.next_delay();
                active.retry_at = Some(Instant::now() + delay);
                tracing::error!(
                    target: "cqrs_vault",
                    role = %self.role,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot obtain new database credentials"
                );
            }
        }
    }

    /// Issues a new credential, publishes it and schedules the old lease's revocation.
    async fn rotate(
        &mut self,
        active: &mut Active,
        tx: &watch::Sender<Arc<DbCredentials>>,
        why: &str,
    ) -> Result<()> {
        let (creds, fresh) = self.issue().await?;
        let old = std::mem::replace(active, fresh);
        self.backoff.reset();
        tx.send_replace(creds);
        let now = Instant::now();
        // Revoke after the grace period, and before Vault would drop the user anyway.
        let latest = old
            .hard_deadline
            .unwrap_or(old.expires_at)
            .min(old.expires_at);
        let revoke_at = (now + self.options.revoke_grace)
            .min(
                latest
                    .checked_sub(Duration::from_millis(500))
                    .unwrap_or(now),
            )
            .max(now);
        tracing::info!(
            target: "cqrs_vault",
            role = %self.role,
            old_username = %old.creds.username,
            new_username = %active.creds.username,
            reason = why,
            revoke_in_ms = revoke_at.saturating_duration_since(now).as_millis() as u64,
            "database credentials rotated"
        );
        self.retiring.push(Retiring {
            lease_id: old.creds.lease_id.clone(),
            username: old.creds.username.clone(),
            revoke_at,
            expires_at: old.expires_at,
        });
        Ok(())
    }

    async fn revoke_due(&mut self) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|r| r.revoke_at <= now);
        self.retiring = keep;
        for r in due {
            if !self.revoke(&r.lease_id, &r.username).await && r.expires_at > now {
                // Unreachable: try again later; Vault drops it at expiry anyway.
                let delay = self.backoff.next_delay();
                self.retiring.push(Retiring {
                    revoke_at: now + delay,
                    ..r
                });
            }
        }
    }

    /// Revokes a lease; false when Vault was unreachable (worth retrying).
    async fn revoke(&self, lease_id: &Secret, username: &str) -> bool {
        let body = json!({ "lease_id": lease_id.expose() });
        match self.client.write("sys/leases/revoke", &body).await {
            Ok(_) => {
                self.client.metrics().lease_revocations.inc();
                tracing::info!(
                    target: "cqrs_vault",
                    role = %self.role,
                    username,
                    "database lease revoked"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    target: "cqrs_vault",
                    role = %self.role,
                    username,
                    error = %e,
                    "cannot revoke the database lease"
                );
                !e.is_unreachable()
            }
        }
    }

    /// True when Vault says the lease no longer exists (revoked or expired).
    ///
    /// Only a refused lookup (400, "invalid lease") says so. The `ttl` of a lease that was
    /// found is in whole seconds, rounded down: 0 in its last second (and for a lease
    /// without expiry), while it is still valid and renewable; the lease's own clock
    /// ([`Worker::renew`], the expiry path) handles the end of its life.
    async fn lease_gone(&mut self, active: &Active) -> bool {
        let body = json!({ "lease_id": active.creds.lease_id.expose() });
        match self.client.write("sys/leases/lookup", &body).await {
            Ok(_) => false,
            Err(VaultError::Refused { status: 400, .. }) => true,
            Err(e) => {
                tracing::debug!(target: "cqrs_vault", error = %e, "lease lookup failed");
                false
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
