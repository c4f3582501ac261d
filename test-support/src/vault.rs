//! Helpers for integration tests against the real Vault/OpenBao of the development
//! stack (moved here from `cqrs-vault`'s former `testkit` feature; not for production code).
//!
//! * [`VaultAdmin`]: raw API calls with the root token, and set-up of throw-away
//!   database connections/roles, policies and AppRoles.
//! * [`PgAdmin`]: the stack's PostgreSQL admin login, for the database secrets engine.
//! * [`LogCapture`]: a global tracing subscriber writing into a buffer, to assert that no
//!   secret was logged.
//! * [`FlakyProxy`]: a TCP forwarder that can be switched off, to make Vault unreachable.
//!
//! Endpoints come from [`crate::env`] (`VAULT_ADDR`, `VAULT_TOKEN`, `POSTGRES_*`).
//!
//! ```no_run
//! use cqrs_test_support::vault::{LogCapture, VaultAdmin};
//!
//! # async fn run() {
//! let logs = LogCapture::install();
//! let admin = VaultAdmin::from_stack().await.expect("the stack's OpenBao must be up");
//! let health = admin.read("sys/health").await.unwrap();
//! logs.assert_absent(&["dev-root-token"]);
//! # let _ = health; }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cqrs_vault::{Result, Secret, VaultError};
use serde_json::{Value, json};

use crate::env::stack_env;

/// The PostgreSQL admin login of the stack (`POSTGRES_*`).
#[derive(Clone)]
pub struct PgAdmin {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// Admin user.
    pub user: String,
    /// Its password.
    pub password: Secret,
}

impl std::fmt::Debug for PgAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAdmin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl PgAdmin {
    /// From [`stack_env`] with the stack's defaults.
    pub fn from_stack() -> Self {
        PgAdmin {
            host: stack_env("POSTGRES_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: stack_env("POSTGRES_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432),
            database: stack_env("POSTGRES_DB").unwrap_or_else(|| "cqrs".into()),
            user: stack_env("POSTGRES_USER").unwrap_or_else(|| "cqrs_admin".into()),
            password: Secret::new(
                stack_env("POSTGRES_PASSWORD").unwrap_or_else(|| "cqrs_admin_dev".into()),
            ),
        }
    }
}

/// Root-token access to the stack's Vault, for setting up tests.
#[derive(Clone)]
pub struct VaultAdmin {
    http: reqwest::Client,
    address: String,
    token: Secret,
}

impl std::fmt::Debug for VaultAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultAdmin")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Files of an AppRole created by [`VaultAdmin::create_approle`].
#[derive(Debug, Clone)]
pub struct AppRoleFiles {
    /// Directory holding `role_id` and `secret_id`.
    pub dir: PathBuf,
    /// The secret id (to assert that it never shows up in logs).
    pub secret_id: Secret,
}

impl VaultAdmin {
    /// `VAULT_ADDR` and `VAULT_TOKEN` from [`stack_env`]; checks that the server is up,
    /// unsealed and accepts the token.
    ///
    /// # Errors
    /// A message saying what is missing, meant for `expect`.
    pub async fn from_stack() -> std::result::Result<Self, String> {
        let address = stack_env("VAULT_ADDR").unwrap_or_else(|| "http://127.0.0.1:8200".into());
        let token = stack_env("VAULT_TOKEN")
            .ok_or("VAULT_TOKEN is not set (in the environment, .env.local or .env)")?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let admin = VaultAdmin {
            http,
            address: address.trim_end_matches('/').to_owned(),
            token: Secret::new(token),
        };
        admin.read("auth/token/lookup-self").await.map_err(|e| {
            format!(
                "the stack's OpenBao at {} does not answer with the root token ({e}); run `docker/stack.sh up`",
                admin.address
            )
        })?;
        Ok(admin)
    }

    /// The address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The root token.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| VaultError::Unreachable {
            path: path.into(),
            message: e.without_url().to_string(),
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let errors = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect();
            return Err(VaultError::Refused {
                path: path.into(),
                status: status.as_u16(),
                errors,
            });
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| VaultError::Decode {
                path: path.into(),
                message: e.to_string(),
            })
    }

    /// `GET /v1/<path>`.
    pub async fn read(&self, path: &str) -> Result<Option<Value>> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST /v1/<path>`.
    pub async fn write(&self, path: &str, body: &Value) -> Result<Option<Value>> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `DELETE /v1/<path>`.
    pub async fn delete(&self, path: &str) -> Result<Option<Value>> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// A database connection `name` (PostgreSQL plugin) for the roles matching
    /// `allowed_roles` (globs allowed), logging in as the stack's admin.
    pub async fn configure_postgres_connection(
        &self,
        name: &str,
        allowed_roles: &str,
        pg: &PgAdmin,
    ) -> Result<()> {
        let url = format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}?sslmode=disable",
            pg.host, pg.port, pg.database
        );
        self.write(
            &format!("database/config/{name}"),
            &json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "username": pg.user,
                "password": pg.password.expose(),
                "allowed_roles": allowed_roles,
                "verify_connection": true,
                "password_authentication": "scram-sha-256",
            }),
        )
        .await?;
        Ok(())
    }

    /// A database role like the stack's service roles (users `IN ROLE group` whose
    /// sessions run as `group` with `search_path = schema`) with the given TTLs
    /// (`"6s"`, `"1h"`).
    pub async fn create_postgres_role(
        &self,
        connection: &str,
        role: &str,
        group: &str,
        schema: &str,
        default_ttl: &str,
        max_ttl: &str,
    ) -> Result<()> {
        let creation = format!(
            "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}' INHERIT IN ROLE \"{group}\"; ALTER ROLE \"{{{{name}}}}\" SET role = '{group}'; ALTER ROLE \"{{{{name}}}}\" SET search_path = \"{schema}\", public;"
        );
        let revocation = format!(
            "REASSIGN OWNED BY \"{{{{name}}}}\" TO \"{group}\"; DROP OWNED BY \"{{{{name}}}}\"; DROP ROLE IF EXISTS \"{{{{name}}}}\";"
        );
        let renew = "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';";
        self.write(
            &format!("database/roles/{role}"),
            &json!({
                "db_name": connection,
                "creation_statements": [creation],
                "revocation_statements": [revocation],
                "renew_statements": [renew],
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            }),
        )
        .await?;
        Ok(())
    }

    /// A policy from HCL text.
    pub async fn put_policy(&self, name: &str, hcl: &str) -> Result<()> {
        self.write(
            &format!("sys/policies/acl/{name}"),
            &json!({ "policy": hcl }),
        )
        .await?;
        Ok(())
    }

    /// An AppRole `name` with `policies` and token TTLs (`"15s"`), its `role_id` and a new
    /// `secret_id` written to files in `dir` (mode 600).
    pub async fn create_approle(
        &self,
        name: &str,
        policies: &[&str],
        token_ttl: &str,
        token_max_ttl: &str,
        dir: &Path,
    ) -> Result<AppRoleFiles> {
        if !matches!(self.read("sys/auth").await?, Some(v) if v.get("approle/").is_some()) {
            let _ = self
                .write("sys/auth/approle", &json!({ "type": "approle" }))
                .await;
        }
        self.write(
            &format!("auth/approle/role/{name}"),
            &json!({
                "token_policies": policies,
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
                "secret_id_ttl": "0",
            }),
        )
        .await?;
        let role_id = self
            .read(&format!("auth/approle/role/{name}/role-id"))
            .await?
            .and_then(|v| v["data"]["role_id"].as_str().map(str::to_owned))
            .ok_or_else(|| VaultError::Decode {
                path: "role-id".into(),
                message: "no role_id".into(),
            })?;
        let secret_id = self
            .write(&format!("auth/approle/role/{name}/secret-id"), &json!({}))
            .await?
            .and_then(|v| v["data"]["secret_id"].as_str().map(str::to_owned))
            .ok_or_else(|| VaultError::Decode {
                path: "secret-id".into(),
                message: "no secret_id".into(),
            })?;
        std::fs::create_dir_all(dir).map_err(|e| VaultError::Config(e.to_string()))?;
        for (file, value) in [("role_id", &role_id), ("secret_id", &secret_id)] {
            let path = dir.join(file);
            std::fs::write(&path, value).map_err(|e| VaultError::Config(e.to_string()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            }
        }
        Ok(AppRoleFiles {
            dir: dir.to_owned(),
            secret_id: Secret::new(secret_id),
        })
    }

    /// Revokes a lease from outside (as an operator would).
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<()> {
        self.write("sys/leases/revoke", &json!({ "lease_id": lease_id }))
            .await?;
        Ok(())
    }

    /// Writes a new version of a KV v2 secret; returns its version number.
    pub async fn kv_put(&self, mount: &str, path: &str, data: &Value) -> Result<u64> {
        let answer = self
            .write(&format!("{mount}/data/{path}"), &json!({ "data": data }))
            .await?;
        answer
            .and_then(|v| v["data"]["version"].as_u64())
            .ok_or_else(|| VaultError::Decode {
                path: path.into(),
                message: "no version".into(),
            })
    }
}

/// The buffer every test's tracing output goes to.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures all tracing output of the process (TRACE for the toolkit's crates, DEBUG for
/// the rest) into memory.
#[derive(Clone)]
pub struct LogCapture {
    buffer: Buffer,
}

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture")
            .field("bytes", &self.contents().len())
            .finish()
    }
}

impl LogCapture {
    /// Installs the global subscriber once per process and returns the shared capture.
    pub fn install() -> LogCapture {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let buffer = Buffer::default();
                let writer = buffer.clone();
                let filter = tracing_subscriber::EnvFilter::new(
                    "debug,cqrs_vault=trace,cqrs_postgres=trace,cqrs_mongo=trace,sync_service=trace",
                );
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .try_init();
                LogCapture { buffer }
            })
            .clone()
    }

    /// Everything logged so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned()
    }

    /// Panics (without printing the secret) when one of `secrets` appears in the logs.
    pub fn assert_absent(&self, secrets: &[&str]) {
        let logs = self.contents();
        for (i, secret) in secrets.iter().enumerate() {
            if secret.len() >= 4 && logs.contains(secret) {
                panic!(
                    "secret #{i} (length {}) appears in the captured logs",
                    secret.len()
                );
            }
        }
    }
}

/// A policy for test AppRoles: leased credentials of the `vault_it_*` database roles,
/// lease renew/revoke/lookup, and the KV secrets under `secret/vault_it/`.
pub const TEST_POLICY: &str = r#"
path "database/creds/vault_it_*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "secret/data/vault_it/*" { capabilities = ["read"] }
path "secret/metadata/vault_it/*" { capabilities = ["read", "list"] }
"#;

/// The database connection the test roles use (`database/config/vault_it`).
pub const TEST_CONNECTION: &str = "vault_it";

impl VaultAdmin {
    /// Creates (idempotently) the [`TEST_CONNECTION`] for roles `vault_it_*` and the
    /// policy `vault-it` ([`TEST_POLICY`]).
    /// Done once per process (concurrent writes of the same connection make OpenBao's
    /// in-memory storage fail a transaction).
    pub async fn prepare_test_backend(&self, pg: &PgAdmin) -> Result<()> {
        static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        DONE.get_or_try_init(|| async {
            self.configure_postgres_connection(TEST_CONNECTION, "vault_it_*", pg)
                .await?;
            self.put_policy("vault-it", TEST_POLICY).await
        })
        .await
        .map(|_| ())
    }

    /// The stack's OpenBao with the test backend prepared: what every Vault test starts
    /// with. Panics, naming what is missing, when OpenBao is not up (test code: a test
    /// that needs it must fail loudly).
    ///
    /// ```no_run
    /// # async fn demo() {
    /// let admin = cqrs_test_support::vault::VaultAdmin::for_tests().await;
    /// admin.put_policy("reader", r#"path "kv/*" { capabilities = ["read"] }"#).await.unwrap();
    /// # }
    /// ```
    pub async fn for_tests() -> VaultAdmin {
        let admin = VaultAdmin::from_stack()
            .await
            .unwrap_or_else(|e| panic!("OpenBao of the stack is required: {e}"));
        admin
            .prepare_test_backend(&PgAdmin::from_stack())
            .await
            .unwrap_or_else(|e| panic!("test database connection and policy: {e}"));
        admin
    }
}

/// A TCP forwarder in front of Vault that can be switched off, to simulate an
/// unreachable server for one client without disturbing anyone else.
#[derive(Debug, Clone)]
pub struct FlakyProxy {
    address: String,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyProxy {
    /// Listens on 127.0.0.1 (random port) and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&down);
        let target = target.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    drop(inbound); // connection reset: unreachable
                    continue;
                }
                let target = target.clone();
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    // Cut established (keep-alive) connections too when switched off.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async {
                            while !flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        } => {}
                    }
                });
            }
        });
        Ok(FlakyProxy { address, down })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Switches forwarding off (`true`) or on.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}
