//! Configuration: parsing, `${VAR}` expansion, `SYNC__*` overrides, and errors that name
//! the offending key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sync_service::config::{ConfigError, SyncConfig};

const BASE: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
group_id = "sync"
topics = ["cqrs.shop.orders"]

[mongodb]
uri = "mongodb://127.0.0.1:27017"
database = "read"

[[projection]]
table = "shop.orders"
collection = "orders"
"#;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn key_of(err: ConfigError) -> String {
    match err {
        ConfigError::Key { key, .. } => key,
        other => panic!("expected a key error, got {other}"),
    }
}

#[test]
fn defaults_apply() {
    let c = SyncConfig::from_toml_str(BASE).unwrap();
    assert_eq!(c.batch.max_size, 500);
    assert_eq!(c.dead_letter.topic, "sync-service.dlq");
    assert_eq!(c.kafka.format, "auto");
    assert_eq!(c.projections[0].name(), "shop.orders");
}

#[test]
fn environment_overrides_replace_values_with_their_type() {
    let c = SyncConfig::from_toml_with_env(
        BASE,
        vars(&[
            ("SYNC__KAFKA__GROUP_ID", "other"),
            ("SYNC__BATCH__MAX_SIZE", "1000"),
            ("SYNC__KAFKA__TOPICS", "a,b"),
            ("SYNC__KAFKA__PROPERTIES__SASL__PASSWORD", "secret"),
            ("SYNC__PROJECTION__0__COLLECTION", "orders_v2"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.group_id, "other");
    assert_eq!(c.batch.max_size, 1000);
    assert_eq!(c.kafka.topics, vec!["a", "b"]);
    assert_eq!(c.kafka.properties["sasl.password"], "secret");
    assert_eq!(c.projections[0].collection, "orders_v2");
}

#[test]
fn variables_expand_with_defaults() {
    let text = BASE.replace(
        "mongodb://127.0.0.1:27017",
        "${MONGO_URI:-mongodb://fallback:27017}",
    );
    let c = SyncConfig::from_toml_with_env(&text, vars(&[])).unwrap();
    assert_eq!(c.mongodb.uri, "mongodb://fallback:27017");
    let c =
        SyncConfig::from_toml_with_env(&text, vars(&[("MONGO_URI", "mongodb://real:1")])).unwrap();
    assert_eq!(c.mongodb.uri, "mongodb://real:1");
    let missing = BASE.replace("mongodb://127.0.0.1:27017", "${NOT_SET}");
    let err = SyncConfig::from_toml_with_env(&missing, vars(&[])).unwrap_err();
    assert_eq!(key_of(err.clone()), "mongodb.uri");
    assert!(err.to_string().contains("NOT_SET"));
}

#[test]
fn errors_name_the_key() {
    let check = |text: String, key: &str| {
        let err = SyncConfig::from_toml_str(&text).unwrap_err();
        assert_eq!(key_of(err.clone()), key, "{err}");
    };
    check(
        BASE.replace(r#"group_id = "sync""#, r#"group_id = """#),
        "kafka.group_id",
    );
    check(
        BASE.replace(r#"group_id = "sync""#, "group_id = 5"),
        "kafka.group_id",
    );
    check(
        BASE.replace(r#"group_id = "sync""#, "grup_id = \"x\""),
        "kafka.grup_id",
    );
    check(
        BASE.replace(r#"database = "read""#, r#"database = "re.ad""#),
        "mongodb.database",
    );
    check(
        BASE.replace(
            r#"uri = "mongodb://127.0.0.1:27017""#,
            r#"uri = "http://x""#,
        ),
        "mongodb.uri",
    );
    check(
        BASE.replace(r#"table = "shop.orders""#, r#"table = "orders""#),
        "projection[0].table",
    );
    check(
        BASE.replace(r#"table = "shop.orders""#, r#"table = "shop.orders; drop""#),
        "projection[0].table",
    );
    check(
        BASE.replace(r#"collection = "orders""#, r#"collection = "$bad""#),
        "projection[0].collection",
    );
    check(format!("{BASE}\n[batch]\nmax_size = 0\n"), "batch.max_size");
    check(
        format!("{BASE}\n[http]\nlisten = \"nowhere\"\n"),
        "http.listen",
    );
    check(
        format!("{BASE}\nrename = {{ a = \"_id\" }}\n"),
        "projection[0].rename.a",
    );
    check(
        format!("{BASE}\n[kafka.properties]\n\"group.id\" = \"x\"\n"),
        "kafka.properties.group.id",
    );
}

#[test]
fn avro_needs_a_registry_and_syntax_errors_are_reported() {
    let err = SyncConfig::from_toml_str(&BASE.replace(
        r#"topics = ["cqrs.shop.orders"]"#,
        "topics = [\"t\"]\nformat = \"avro\"",
    ))
    .unwrap_err();
    assert_eq!(key_of(err), "schema_registry");
    assert!(matches!(
        SyncConfig::from_toml_str("[kafka"),
        Err(ConfigError::Syntax(_))
    ));
}

#[test]
fn debug_output_hides_secrets() {
    let text = BASE.replace(
        "mongodb://127.0.0.1:27017",
        "mongodb://user:hunter2@127.0.0.1:27017",
    );
    let c = SyncConfig::from_toml_with_env(
        &text,
        vars(&[("SYNC__KAFKA__PROPERTIES__SASL__PASSWORD", "s3cret")]),
    )
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("s3cret"),
        "{debug}"
    );
}
