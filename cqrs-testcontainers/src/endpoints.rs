//! Where the stack's services answer, and with which credentials.

/// Addresses and credentials of the stack's services, from the test process or from the
/// stack's network ([`CqrsStack::endpoints`], [`CqrsStack::network_endpoints`]).
///
/// ```
/// let e = cqrs_testcontainers::Endpoints {
///     postgres_host: "127.0.0.1".into(),
///     postgres_port: 5432,
///     postgres_db: "cqrs".into(),
///     postgres_user: "cqrs_admin".into(),
///     postgres_password: "cqrs_admin_dev".into(),
///     kafka_bootstrap: "127.0.0.1:9092".into(),
///     schema_registry_url: "http://127.0.0.1:8081".into(),
///     kafka_connect_url: "http://127.0.0.1:8083".into(),
///     mongodb_uri: "mongodb://127.0.0.1:27017/?directConnection=true".into(),
///     debezium_topic_prefix: "cqrs".into(),
/// };
/// assert_eq!(e.database_url(), "postgres://cqrs_admin:cqrs_admin_dev@127.0.0.1:5432/cqrs?sslmode=disable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// PostgreSQL host.
    pub postgres_host: String,
    /// PostgreSQL port.
    pub postgres_port: u16,
    /// The database (`cqrs`).
    pub postgres_db: String,
    /// The admin role (superuser of the test server).
    pub postgres_user: String,
    /// Its password.
    pub postgres_password: String,
    /// Kafka `bootstrap.servers`.
    pub kafka_bootstrap: String,
    /// The Schema Registry's base URL.
    pub schema_registry_url: String,
    /// Kafka Connect's REST URL.
    pub kafka_connect_url: String,
    /// MongoDB's connection string.
    pub mongodb_uri: String,
    /// Debezium's `topic.prefix` (`cqrs`): change topics are `<prefix>.<schema>.<table>`.
    pub debezium_topic_prefix: String,
}

impl Endpoints {
    /// `postgres://<admin>:<password>@<host>:<port>/<db>?sslmode=disable`.
    ///
    /// ```no_run
    /// # async fn demo(stack: &cqrs_testcontainers::CqrsStack) -> Result<(), tokio_postgres::Error> {
    /// let (client, connection) =
    ///     tokio_postgres::connect(&stack.endpoints().database_url(), tokio_postgres::NoTls).await?;
    /// # Ok(()) }
    /// ```
    pub fn database_url(&self) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}?sslmode=disable",
            self.postgres_user,
            self.postgres_password,
            self.postgres_host,
            self.postgres_port,
            self.postgres_db
        )
    }
}
