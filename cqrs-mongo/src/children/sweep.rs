//! Truncates: everything older than a floor goes, parents and children each by their own
//! versions.

use bson::{Bson, Document, doc};
use cqrs_core::{SourceVersion, Target};

use super::write::kept_children;
use super::{CHILDREN_FIELD, validate_field};
use crate::client::MongoClient;
use crate::error::{MongoError, Result};
use crate::model::{DELETED_AT_FIELD, DELETED_FIELD, VersionFields};

/// `{<position>: ..older than floor..}` as a query filter (a missing version is zero).
fn older_filter(fields: &VersionFields, floor: (i64, i64)) -> Document {
    let (position, index) = floor;
    if index == 0 {
        doc! { fields.position.as_str(): { "$not": { "$gte": position } } }
    } else {
        doc! { "$nor": [
            { fields.position.as_str(): { "$gt": position } },
            { fields.position.as_str(): position, fields.index.as_str(): { "$gte": index } },
        ] }
    }
}

/// An expression: true when the version stored at `path` (a variable path such as
/// `$$c.v`) is at least `floor` (a missing version is zero).
fn not_older_expr(path: &str, fields: &VersionFields, floor: (i64, i64)) -> Bson {
    let (position, index) = floor;
    let p = doc! { "$ifNull": [format!("{path}.{}", fields.position), 0_i64] };
    let i = doc! { "$ifNull": [format!("{path}.{}", fields.index), 0_i64] };
    Bson::Document(doc! { "$or": [
        { "$gt": [p.clone(), position] },
        { "$and": [{ "$eq": [p, position] }, { "$gte": [i, index] }] },
    ] })
}

fn encode(floor: SourceVersion, collection: &str) -> Result<(i64, i64)> {
    let position = i64::try_from(floor.position).map_err(|_| MongoError::VersionOutOfRange {
        collection: collection.to_owned(),
        id: None,
        version: floor,
    })?;
    Ok((position, i64::from(floor.index)))
}

impl MongoClient {
    /// Removes what is older than `floor` from read model `target` (a truncate of the table
    /// feeding it, at `floor`): documents without children are deleted; documents holding
    /// children become tombstones at `floor` that keep their children (they are rows of
    /// another table, removed by a truncate of that table:
    /// [`MongoClient::sweep_children`]); documents of children whose parent never came
    /// (no parent version) stay as they are. Writes to the live version and to the one being
    /// rebuilt. Returns how many documents were deleted or hidden.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// use cqrs_core::{SourceVersion, Target};
    /// use cqrs_mongo::VersionFields;
    /// let gone = mongo
    ///     .sweep_older(&Target::collection("orders"), SourceVersion::new(0x5000), &VersionFields::new("_version"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn sweep_older(
        &self,
        target: &Target,
        floor: SourceVersion,
        fields: &VersionFields,
    ) -> Result<u64> {
        let (position, index) = encode(floor, &target.collection)?;
        let older = older_filter(fields, (position, index));
        let layout = self
            .layout(target.database.as_deref(), &target.collection)
            .await?;
        let database = self.database(Some(&layout.database));
        let mut gone = 0;
        for physical in layout.write_targets() {
            let coll = database.collection::<Document>(physical);
            let mut plain = older.clone();
            plain.insert(CHILDREN_FIELD, doc! { "$exists": false });
            gone += coll
                .delete_many(plain)
                .await
                .map_err(|e| MongoError::mongo("delete", physical, None, e))?
                .deleted_count;
            // Documents of children whose parent never came have no version: left alone.
            let parents = doc! { "$and": [
                older.clone(),
                { CHILDREN_FIELD: { "$exists": true } },
                { fields.position.as_str(): { "$exists": true } },
            ] };
            let tombstone = doc! {
                fields.position.as_str(): position,
                fields.index.as_str(): index,
                DELETED_FIELD: true,
                DELETED_AT_FIELD: bson::DateTime::now(),
            };
            let pipeline = vec![doc! { "$replaceWith": { "$mergeObjects": [
                { "_id": "$_id" },
                { "$literal": tombstone },
                kept_children(),
            ] } }];
            gone += coll
                .update_many(parents, pipeline)
                .await
                .map_err(|e| MongoError::mongo("update", physical, None, e))?
                .modified_count;
        }
        Ok(gone)
    }

    /// Removes the children `field` older than `floor` from every document of read model
    /// `target` (a truncate of the child table at `floor`), their versions with them (the
    /// floor now guards them). Parents stay. Returns how many documents changed.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// use cqrs_core::{SourceVersion, Target};
    /// use cqrs_mongo::VersionFields;
    /// let changed = mongo
    ///     .sweep_children(&Target::collection("orders"), "lines", SourceVersion::new(0x5000), &VersionFields::new("_version"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn sweep_children(
        &self,
        target: &Target,
        field: &str,
        floor: SourceVersion,
        fields: &VersionFields,
    ) -> Result<u64> {
        validate_field(field).map_err(|reason| MongoError::InvalidWrite {
            collection: target.collection.clone(),
            id: None,
            reason,
        })?;
        let floor = encode(floor, &target.collection)?;
        let entries = format!("{CHILDREN_FIELD}.{field}");
        let pipeline = vec![
            doc! { "$set": { &entries: { "$arrayToObject": { "$filter": {
                "input": { "$objectToArray": format!("${entries}") },
                "as": "c",
                "cond": not_older_expr("$$c.v", fields, floor),
            } } } } },
            doc! { "$set": { field: { "$arrayToObject": { "$filter": {
                "input": { "$objectToArray": { "$ifNull": [format!("${field}"), {}] } },
                "as": "e",
                "cond": { "$in": ["$$e.k", { "$map": {
                    "input": { "$objectToArray": format!("${entries}") },
                    "in": "$$this.k",
                } }] },
            } } } } },
        ];
        let layout = self
            .layout(target.database.as_deref(), &target.collection)
            .await?;
        let database = self.database(Some(&layout.database));
        let mut changed = 0;
        for physical in layout.write_targets() {
            changed += database
                .collection::<Document>(physical)
                .update_many(doc! { &entries: { "$exists": true } }, pipeline.clone())
                .await
                .map_err(|e| MongoError::mongo("update", physical, None, e))?
                .modified_count;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_compare_position_then_index() {
        let f = VersionFields::new("_version");
        assert_eq!(
            older_filter(&f, (5, 0)),
            doc! { "_version": { "$not": { "$gte": 5_i64 } } }
        );
        assert!(older_filter(&f, (5, 1)).contains_key("$nor"));
        let Bson::Document(e) = not_older_expr("$$c.v", &f, (5, 1)) else {
            panic!("a document")
        };
        assert_eq!(e.get_array("$or").unwrap().len(), 2);
    }
}
