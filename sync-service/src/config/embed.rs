//! `embed = { ... }` of a `[[projection]]`: the rows of a child table embedded in their
//! parent's document (see `map::children` and `cqrs_mongo::children`).

use serde::Deserialize;

use super::{ConfigError, TableMapping};

/// Where the rows of a child table go inside their parent's document:
///
/// ```toml
/// [[projection]]
/// table = "shop.order_lines"            # the child table
/// collection = "orders"                 # the parent's collection
/// embed = { field = "lines", parent_key = ["order_id"] }
/// ```
///
/// ```
/// use sync_service::config::TableMapping;
///
/// let m: TableMapping = toml::from_str(r#"
///     table = "shop.order_lines"
///     collection = "orders"
///     exclude = ["order_id"]
///     embed = { field = "lines", parent_key = ["order_id"], key = ["line_no"] }
/// "#).unwrap();
/// let embed = m.embed.unwrap();
/// assert_eq!((embed.field.as_str(), embed.parent_key.len()), ("lines", 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedMapping {
    /// The map of children inside the parent document (`lines`): letters, digits and
    /// `_`, not starting with `_`.
    pub field: String,
    /// The child's columns holding its parent's `_id`, in order: one gives a scalar `_id`,
    /// several a sub-document (named by `parent_id_fields`). A child whose parent columns
    /// are NULL belongs to no parent and is left out.
    pub parent_key: Vec<String>,
    /// The names of the fields of the parent's `_id` sub-document, one per `parent_key`
    /// column (the parent's own key columns); defaults to the `parent_key` names.
    #[serde(default)]
    pub parent_id_fields: Vec<String>,
    /// The columns forming the child's key within its parent; defaults to the columns of
    /// the message key (the primary key) that are not in `parent_key`.
    #[serde(default)]
    pub key: Vec<String>,
}

/// Checks the `embed` of projection `i` (when it has one).
pub(super) fn check(
    p: &TableMapping,
    i: usize,
    field_name: fn(&str) -> Result<(), String>,
) -> Result<(), ConfigError> {
    let Some(embed) = &p.embed else {
        return Ok(());
    };
    let key = |k: &str| format!("projection[{i}].embed.{k}");
    cqrs_mongo::children::validate_field(&embed.field)
        .map_err(|m| ConfigError::key(key("field"), m))?;
    if embed.parent_key.is_empty() {
        return Err(ConfigError::key(
            key("parent_key"),
            "names the child's columns holding its parent's id",
        ));
    }
    for f in embed
        .parent_key
        .iter()
        .chain(&embed.parent_id_fields)
        .chain(&embed.key)
    {
        field_name(f).map_err(|m| ConfigError::key(key("parent_key/parent_id_fields/key"), m))?;
    }
    if !embed.parent_id_fields.is_empty() && embed.parent_id_fields.len() != embed.parent_key.len()
    {
        return Err(ConfigError::key(
            key("parent_id_fields"),
            "needs one name per parent_key column",
        ));
    }
    if !p.id_fields.is_empty() {
        return Err(ConfigError::key(
            format!("projection[{i}].id_fields"),
            "a child is stored in its parent's document: give embed.parent_key instead",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, SyncConfig};

    fn load(embed: &str, extra: &str) -> Result<SyncConfig, ConfigError> {
        SyncConfig::from_toml_str(&format!(
            r#"
            [kafka]
            bootstrap_servers = "127.0.0.1:9092"
            group_id = "sync"
            topics = ["cqrs.shop.order_lines"]
            [mongodb]
            uri = "mongodb://127.0.0.1:27017"
            database = "read"
            [[projection]]
            table = "shop.order_lines"
            collection = "orders"
            {extra}
            embed = {embed}
            "#
        ))
    }

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Key { key, .. } => key,
            other => panic!("a key error, not {other}"),
        }
    }

    #[test]
    fn an_embed_is_read_and_checked_naming_its_key() {
        let c = load(r#"{ field = "lines", parent_key = ["order_id"] }"#, "").unwrap();
        assert_eq!(c.projections[0].embed.as_ref().unwrap().field, "lines");
        let bad = [
            (
                r#"{ field = "_lines", parent_key = ["order_id"] }"#,
                "",
                "projection[0].embed.field",
            ),
            (
                r#"{ field = "lines", parent_key = [] }"#,
                "",
                "projection[0].embed.parent_key",
            ),
            (
                r#"{ field = "lines", parent_key = ["a", "b"], parent_id_fields = ["x"] }"#,
                "",
                "projection[0].embed.parent_id_fields",
            ),
            (
                r#"{ field = "lines", parent_key = ["a"], key = ["$x"] }"#,
                "",
                "projection[0].embed.parent_key/parent_id_fields/key",
            ),
            (
                r#"{ field = "lines", parent_key = ["a"] }"#,
                r#"id_fields = ["a"]"#,
                "projection[0].id_fields",
            ),
        ];
        for (embed, extra, key) in bad {
            assert_eq!(key_of(load(embed, extra).unwrap_err()), key, "{embed}");
        }
        let unknown = load(r#"{ field = "lines", parent_key = ["a"], nope = 1 }"#, "");
        assert!(unknown.unwrap_err().to_string().contains("nope"));
    }
}
