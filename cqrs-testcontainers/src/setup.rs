//! The steps that run inside containers once they are healthy, with the stack's own
//! scripts: the Debezium connectors (`docker/debezium/register.sh`) and the Vault bootstrap
//! (`docker/vault/bootstrap.sh`).

use std::collections::BTreeMap;

use testcontainers::bollard::Docker;

use crate::container::{Probe, exec};
use crate::images::tail;
use crate::recipes::{self, DEBEZIUM_DIR, VAULT_SCRIPT, secrets};
use crate::vault::VaultSettings;
use crate::{Service, StackError};

/// The connector templates of the stack, capturing `schemas` besides every `cdc_*` schema
/// (the per-test schemas). `${...}` placeholders stay for `register.sh` to fill in.
pub(crate) fn connector_templates(schemas: &[String]) -> Result<Vec<(String, String)>, StackError> {
    let cdc_schemas = schemas
        .iter()
        .map(String::as_str)
        .chain(["cdc_.*"])
        .collect::<Vec<_>>()
        .join(",");
    let outbox_tables = schemas
        .iter()
        .map(|s| format!("{s}\\.outbox"))
        .chain(["cdc_.*\\.outbox".to_owned()])
        .collect::<Vec<_>>()
        .join(",");
    let render = |file: &str, text: &str, key: &str, value: &str| {
        let mut config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| StackError::Config(format!("connector template {file}: {e}")))?;
        config.insert(key.to_owned(), value.into());
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| StackError::Config(format!("connector template {file}: {e}")))?;
        Ok::<_, StackError>((file.to_owned(), text))
    };
    Ok(vec![
        render(
            "cqrs-postgres.json.tmpl",
            recipes::CDC_TEMPLATE,
            "schema.include.list",
            &cdc_schemas,
        )?,
        render(
            "cqrs-outbox.json.tmpl",
            recipes::OUTBOX_TEMPLATE,
            "table.include.list",
            &outbox_tables,
        )?,
    ])
}

/// Registers the connectors from inside the Connect container and waits until they and
/// their tasks are RUNNING (what `register.sh` does).
pub(crate) async fn register_connectors(
    docker: &Docker,
    connect: &Probe,
    session: &str,
) -> Result<(), StackError> {
    let env = [
        ("KAFKA_CONNECT_URL", "http://127.0.0.1:8083".to_owned()),
        // as Connect sees PostgreSQL and the registry: by container name in the network
        ("DBZ_PG_HOST", recipes::host(session, Service::Postgres)),
        ("DBZ_PG_PORT", "5432".to_owned()),
        ("POSTGRES_DB", secrets::PG_DB.to_owned()),
        ("DEBEZIUM_PG_USER", secrets::DBZ_USER.to_owned()),
        ("DEBEZIUM_PG_PASSWORD", secrets::DBZ_PASSWORD.to_owned()),
        (
            "DBZ_SCHEMA_REGISTRY_URL",
            format!(
                "http://{}:8081",
                recipes::host(session, Service::SchemaRegistry)
            ),
        ),
        ("DBZ_WAIT_SECONDS", "120".to_owned()),
    ];
    let script = format!("{DEBEZIUM_DIR}/register.sh");
    let out = exec(docker, connect, &["sh", &script], &env).await?;
    if out.exit_code != Some(0) {
        return Err(StackError::Setup {
            service: Service::KafkaConnect,
            step: "docker/debezium/register.sh".to_owned(),
            exit_code: out.exit_code,
            output: format!(
                "{}\n--- last lines of the Connect log ---\n{}",
                tail(&out.output, 20),
                connect.logs.last(30)
            ),
        });
    }
    Ok(())
}

/// Where the bootstrap writes the AppRole files, inside the Vault container.
const APPROLE_DIR: &str = "/tmp/cqrs-approle";

/// Bootstraps Vault like the stack (database secrets engine on this PostgreSQL, KV v2,
/// a policy and an AppRole per service) and reads back each service's AppRole.
pub(crate) async fn bootstrap_vault(
    docker: &Docker,
    vault: &Probe,
    host_port: u16,
    session: &str,
    services: &[String],
) -> Result<VaultSettings, StackError> {
    let env = [
        ("VAULT_CLI", "vault".to_owned()),
        ("VAULT_ADDR", "http://127.0.0.1:8200".to_owned()),
        ("VAULT_TOKEN", secrets::VAULT_TOKEN.to_owned()),
        // as Vault's database plugin sees PostgreSQL: by container name in the network
        ("VAULT_PG_HOST", recipes::host(session, Service::Postgres)),
        ("VAULT_PG_PORT", "5432".to_owned()),
        ("POSTGRES_DB", secrets::PG_DB.to_owned()),
        ("POSTGRES_USER", secrets::PG_USER.to_owned()),
        ("POSTGRES_PASSWORD", secrets::PG_PASSWORD.to_owned()),
        ("CQRS_SERVICES", services.join(" ")),
        (
            "VAULT_MONGODB_URI",
            format!(
                "mongodb://{}:27017/?directConnection=true",
                recipes::host(session, Service::MongoDb)
            ),
        ),
        ("VAULT_APPROLE_DIR", APPROLE_DIR.to_owned()),
    ];
    let failed = |exit_code, output: &str| StackError::Setup {
        service: Service::Vault,
        step: "docker/vault/bootstrap.sh".to_owned(),
        exit_code,
        output: tail(output, 20),
    };
    let out = exec(docker, vault, &["sh", VAULT_SCRIPT], &env).await?;
    if out.exit_code != Some(0) {
        return Err(failed(out.exit_code, &out.output));
    }
    let mut approles = BTreeMap::new();
    for service in services {
        let mut ids = Vec::new();
        for file in ["role_id", "secret_id"] {
            let path = format!("{APPROLE_DIR}/{service}/{file}");
            let out = exec(docker, vault, &["cat", &path], &[]).await?;
            if out.exit_code != Some(0) {
                return Err(failed(out.exit_code, &format!("cannot read {path}")));
            }
            ids.push(out.output.trim().to_owned());
        }
        let secret_id = ids.pop().unwrap_or_default();
        let role_id = ids.pop().unwrap_or_default();
        approles.insert(service.clone(), (role_id, secret_id));
    }
    Ok(VaultSettings::new(
        format!("http://127.0.0.1:{host_port}"),
        format!("http://{}:8200", recipes::host(session, Service::Vault)),
        approles,
    ))
}

#[cfg(test)]
mod tests {
    use super::connector_templates;

    #[test]
    fn templates_capture_the_named_schemas_and_every_cdc_schema() {
        let t = connector_templates(&["orders".into(), "payments".into()]).unwrap();
        let cdc: serde_json::Value = serde_json::from_str(&t[0].1).unwrap();
        assert_eq!(cdc["schema.include.list"], "orders,payments,cdc_.*");
        assert_eq!(cdc["database.hostname"], "${DBZ_PG_HOST}");
        let outbox: serde_json::Value = serde_json::from_str(&t[1].1).unwrap();
        assert_eq!(
            outbox["table.include.list"],
            "orders\\.outbox,payments\\.outbox,cdc_.*\\.outbox"
        );
    }
}
