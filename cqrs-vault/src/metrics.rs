//! Counters of the Vault clients, shared by every clone of a [`VaultClient`](crate::VaultClient)
//! and by the leases and watchers built from it.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters (monotonic). Read them directly or register them with a prometheus-client
/// [`Registry`].
///
/// ```
/// use cqrs_vault::VaultMetrics;
/// use prometheus_client::registry::Registry;
///
/// let metrics = VaultMetrics::default();
/// let mut registry = Registry::default();
/// metrics.register(&mut registry);
/// assert_eq!(metrics.unreachable_total(), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct VaultMetrics {
    /// Requests that failed because Vault was unreachable or unavailable.
    pub unreachable: Counter,
    /// Logins (AppRole) performed, including re-logins.
    pub logins: Counter,
    /// Successful token renewals.
    pub token_renewals: Counter,
    /// Successful lease renewals.
    pub lease_renewals: Counter,
    /// New database credentials obtained (first one included).
    pub lease_rotations: Counter,
    /// Leases revoked by this process.
    pub lease_revocations: Counter,
    /// Times credentials were still in use past their expiry because Vault could not
    /// provide new ones.
    pub expired_in_use: Counter,
    /// New KV secret versions picked up (first one included).
    pub kv_versions: Counter,
}

impl VaultMetrics {
    /// Registers the counters as `vault_*_total`.
    ///
    /// ```
    /// # let metrics = cqrs_vault::VaultMetrics::default();
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// metrics.register(&mut registry);
    /// ```
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("vault");
        sub.register(
            "unreachable",
            "Requests to Vault that failed because it was unreachable or unavailable",
            self.unreachable.clone(),
        );
        sub.register("logins", "AppRole logins", self.logins.clone());
        sub.register(
            "token_renewals",
            "Successful token renewals",
            self.token_renewals.clone(),
        );
        sub.register(
            "lease_renewals",
            "Successful lease renewals",
            self.lease_renewals.clone(),
        );
        sub.register(
            "lease_rotations",
            "New leased credentials obtained",
            self.lease_rotations.clone(),
        );
        sub.register(
            "lease_revocations",
            "Leases revoked by this process",
            self.lease_revocations.clone(),
        );
        sub.register(
            "expired_in_use",
            "Credentials still in use past their expiry because Vault could not renew them",
            self.expired_in_use.clone(),
        );
        sub.register(
            "kv_versions",
            "KV secret versions picked up",
            self.kv_versions.clone(),
        );
    }

    /// Value of [`VaultMetrics::unreachable`].
    ///
    /// ```
    /// assert_eq!(cqrs_vault::VaultMetrics::default().unreachable_total(), 0);
    /// ```
    pub fn unreachable_total(&self) -> u64 {
        self.unreachable.get()
    }
}
