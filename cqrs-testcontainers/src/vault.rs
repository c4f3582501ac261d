//! Vault as the stack's bootstrap leaves it, ready for `cqrs-vault`.

use std::collections::BTreeMap;
use std::fmt;

use cqrs_vault::{Auth, SecretSource, VaultConfig};

use crate::StackError;
use crate::recipes::secrets;

/// Vault of a stack started [`with_vault`](crate::StackBuilder::with_vault): dev mode,
/// bootstrapped by the stack's own script (database secrets engine on the stack's
/// PostgreSQL with one role per service schema, KV v2 with each service's MongoDB secret,
/// a policy and an AppRole per service).
///
/// `Debug` shows no token or secret id.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let stack = cqrs_testcontainers::CqrsStack::builder().with_vault().start().await?;
/// let vault = stack.vault().expect("started with_vault");
/// let config = vault.approle_config("orders")?; // the AppRole of service `orders`
/// let client = cqrs_vault::VaultClient::connect(config).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VaultSettings {
    address: String,
    network_address: String,
    approles: BTreeMap<String, (String, String)>,
}

impl VaultSettings {
    pub(crate) fn new(
        address: String,
        network_address: String,
        approles: BTreeMap<String, (String, String)>,
    ) -> Self {
        VaultSettings {
            address,
            network_address,
            approles,
        }
    }

    /// The address from the test process (`http://127.0.0.1:<port>`).
    ///
    /// ```no_run
    /// # fn demo(vault: &cqrs_testcontainers::VaultSettings) {
    /// assert!(vault.address().starts_with("http://127.0.0.1:"));
    /// # }
    /// ```
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address from containers on the stack's network (`http://<container>:8200`).
    ///
    /// ```no_run
    /// # fn demo(vault: &cqrs_testcontainers::VaultSettings) {
    /// assert!(vault.network_address().ends_with(":8200"));
    /// # }
    /// ```
    pub fn network_address(&self) -> &str {
        &self.network_address
    }

    /// The dev server's root token (administrative calls in a test).
    ///
    /// ```no_run
    /// # fn demo(vault: &cqrs_testcontainers::VaultSettings) {
    /// let token = vault.root_token();
    /// # }
    /// ```
    pub fn root_token(&self) -> cqrs_vault::Secret {
        cqrs_vault::Secret::new(secrets::VAULT_TOKEN)
    }

    /// The services that have an AppRole (the stack's service schemas).
    ///
    /// ```no_run
    /// # fn demo(vault: &cqrs_testcontainers::VaultSettings) {
    /// assert!(vault.services().contains(&"orders"));
    /// # }
    /// ```
    pub fn services(&self) -> Vec<&str> {
        self.approles.keys().map(String::as_str).collect()
    }

    /// A `cqrs-vault` configuration logging in with `service`'s AppRole: its policy reads
    /// `database/creds/<service>` (a PostgreSQL user `IN ROLE svc_<service>`) and
    /// `secret/cqrs/<service>/mongodb`.
    ///
    /// # Errors
    /// [`StackError::Config`] when the service has no AppRole.
    ///
    /// ```no_run
    /// # fn demo(vault: &cqrs_testcontainers::VaultSettings) -> Result<(), cqrs_testcontainers::StackError> {
    /// let config = vault.approle_config("billing")?;
    /// # Ok(()) }
    /// ```
    pub fn approle_config(&self, service: &str) -> Result<VaultConfig, StackError> {
        let (role_id, secret_id) = self.approles.get(service).ok_or_else(|| {
            StackError::Config(format!(
                "no AppRole for service {service:?}: the stack's services are {:?}",
                self.services()
            ))
        })?;
        Ok(VaultConfig::new(
            self.address.clone(),
            Auth::approle(role_id.as_str(), secret_id.as_str()),
        ))
    }

    /// A `cqrs-vault` configuration with the root token.
    ///
    /// ```no_run
    /// # fn demo(vault: &cqrs_testcontainers::VaultSettings) {
    /// let config = vault.root_config();
    /// assert_eq!(config.address(), vault.address());
    /// # }
    /// ```
    pub fn root_config(&self) -> VaultConfig {
        VaultConfig::new(
            self.address.clone(),
            Auth::Token(SecretSource::value(secrets::VAULT_TOKEN)),
        )
    }
}

impl fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSettings")
            .field("address", &self.address)
            .field("network_address", &self.network_address)
            .field("services", &self.services())
            .finish_non_exhaustive()
    }
}
