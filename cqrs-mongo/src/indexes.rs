//! Index creation and verification at start-up.
//!
//! [`ensure_indexes`] creates the declared indexes that are missing and checks the others:
//! an existing index with the same name but other keys, or with the same keys but other
//! options (unique, sparse, TTL, partial filter), is a [`MongoError::IndexConflict`], never
//! silently ignored nor silently dropped.

use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::{Collection, IndexModel, options::IndexOptions};

use crate::{
    error::{MongoError, Result, error_code},
    model::DELETED_AT_FIELD,
};

/// Name of the index on tombstones' deletion time (TTL when the model sets one).
pub const TOMBSTONE_INDEX: &str = "cqrs_tombstones";

/// The index on `_deleted_at`, removing tombstones after `ttl` when given.
///
/// ```
/// use std::time::Duration;
/// let idx = cqrs_mongo::indexes::tombstone_index(Some(Duration::from_secs(86_400)));
/// assert_eq!(idx.options.unwrap().expire_after, Some(Duration::from_secs(86_400)));
/// ```
pub fn tombstone_index(ttl: Option<Duration>) -> IndexModel {
    let mut options = IndexOptions::default();
    options.name = Some(TOMBSTONE_INDEX.to_string());
    options.expire_after = ttl;
    options.sparse = Some(true);
    IndexModel::builder()
        .keys(doc! { DELETED_AT_FIELD: 1 })
        .options(options)
        .build()
}

/// The name MongoDB gives an index without an explicit name (`a_1_b_-1`).
///
/// ```
/// use cqrs_mongo::bson::doc;
/// assert_eq!(cqrs_mongo::indexes::default_name(&doc! { "a": 1, "b": -1 }), "a_1_b_-1");
/// ```
pub fn default_name(keys: &Document) -> String {
    keys.iter()
        .map(|(k, v)| format!("{k}_{}", key_value(v)))
        .collect::<Vec<_>>()
        .join("_")
}

fn key_value(v: &Bson) -> String {
    match v {
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(d) if d.fract() == 0.0 => format!("{}", *d as i64),
        Bson::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn name_of(index: &IndexModel) -> String {
    index
        .options
        .as_ref()
        .and_then(|o| o.name.clone())
        .unwrap_or_else(|| default_name(&index.keys))
}

/// The comparable part of an index: keys and the options that change its meaning.
fn spec(index: &IndexModel) -> Document {
    let keys: Document = index
        .keys
        .iter()
        .map(|(k, v)| (k.clone(), Bson::String(key_value(v))))
        .collect();
    let mut d = doc! { "key": keys };
    if let Some(o) = &index.options {
        if o.unique == Some(true) {
            d.insert("unique", true);
        }
        if o.sparse == Some(true) {
            d.insert("sparse", true);
        }
        if let Some(ttl) = o.expire_after {
            d.insert("expireAfterSeconds", ttl.as_secs() as i64);
        }
        if let Some(p) = &o.partial_filter_expression {
            d.insert("partialFilterExpression", p.clone());
        }
    }
    d
}

/// Creates the missing indexes of a collection and verifies the existing ones; returns
/// the names of the indexes it created.
///
/// ```no_run
/// # async fn demo(coll: mongodb::Collection<cqrs_mongo::bson::Document>) -> cqrs_mongo::Result<()> {
/// use cqrs_mongo::{bson::doc, IndexModel};
/// let created = cqrs_mongo::indexes::ensure_indexes(
///     &coll,
///     vec![IndexModel::builder().keys(doc! { "email": 1 }).build()],
/// ).await?;
/// # Ok(()) }
/// ```
pub async fn ensure_indexes(
    coll: &Collection<Document>,
    declared: Vec<IndexModel>,
) -> Result<Vec<String>> {
    let ns = coll.namespace().to_string();
    let existing: Vec<IndexModel> = match coll.list_indexes().await {
        Ok(cursor) => cursor
            .try_collect()
            .await
            .map_err(|e| MongoError::mongo("listIndexes", ns.clone(), None, e))?,
        // NamespaceNotFound: no collection yet, hence no index.
        Err(e) if error_code(&e) == Some(26) => Vec::new(),
        Err(e) => return Err(MongoError::mongo("listIndexes", ns, None, e)),
    };
    let mut missing = Vec::new();
    for index in declared {
        let name = name_of(&index);
        let wanted = spec(&index);
        let conflict = |reason: &str, other: &IndexModel| MongoError::IndexConflict {
            collection: ns.clone(),
            name: name.clone(),
            reason: reason.to_string(),
            existing: Box::new(spec(other)),
            declared: Box::new(wanted.clone()),
        };
        if let Some(same_name) = existing.iter().find(|e| name_of(e) == name) {
            let have = spec(same_name);
            if have.get("key") != wanted.get("key") {
                return Err(conflict(
                    "an index with this name has other keys",
                    same_name,
                ));
            }
            if have != wanted {
                return Err(conflict(
                    "an index with this name has other options (drop it, or use collMod for a TTL change)",
                    same_name,
                ));
            }
            continue;
        }
        if let Some(same_keys) = existing
            .iter()
            .find(|e| spec(e).get("key") == wanted.get("key"))
        {
            if spec(same_keys) != wanted {
                return Err(conflict(
                    &format!(
                        "index `{}` has the same keys and other options",
                        name_of(same_keys)
                    ),
                    same_keys,
                ));
            }
            tracing::debug!(collection = %ns, index = %name, existing = %name_of(same_keys), "index exists under another name");
            continue;
        }
        missing.push(index);
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = missing.iter().map(name_of).collect();
    match coll.create_indexes(missing.clone()).await {
        Ok(_) => Ok(names),
        Err(e) if matches!(error_code(&e), Some(85 | 86)) => Err(MongoError::IndexConflict {
            collection: ns,
            name: names.join(", "),
            reason: format!("the server refused the index: {e}"),
            existing: Box::default(),
            declared: Box::new(missing.first().map(spec).unwrap_or_default()),
        }),
        Err(e) => Err(MongoError::mongo("createIndexes", ns, None, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_ignore_numeric_types_and_default_options() {
        let a = IndexModel::builder().keys(doc! { "a": 1_i32 }).build();
        let b = IndexModel::builder()
            .keys(doc! { "a": 1.0 })
            .options(IndexOptions::builder().unique(false).build())
            .build();
        assert_eq!(spec(&a), spec(&b));
        let c = IndexModel::builder()
            .keys(doc! { "a": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build();
        assert_ne!(spec(&a), spec(&c));
    }
}
