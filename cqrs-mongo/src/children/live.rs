//! The live versions of children: what a fill of a child adopts (see the sync-service's
//! rebuilds and [`BulkWriter::live_versions`]).

use bson::{Bson, Document, doc};
use cqrs_core::{SourceVersion, Target};
use futures::TryStreamExt;

use super::{CHILDREN_FIELD, validate_field};
use crate::bulk::BulkWriter;
use crate::error::{MongoError, Result};
use crate::model::DELETED_FIELD;

impl BulkWriter {
    /// The stored versions of children `(parent id, key)` of collection of children `field`
    /// in `target`'s live version, for those that exist and are not deleted (whatever
    /// their parent's state: a child's version is its own).
    ///
    /// A fill of a child adopts it for the same reason a fill of a document adopts the
    /// document's ([`BulkWriter::live_versions`]): its true position is the child's last
    /// change before the snapshot read it.
    ///
    /// ```no_run
    /// # async fn demo(mongo: cqrs_mongo::MongoClient) -> cqrs_mongo::Result<()> {
    /// use cqrs_core::Target;
    /// let found = mongo
    ///     .bulk_writer()
    ///     .live_child_versions(&Target::collection("orders"), "lines", &[(7.into(), "3".into())])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn live_child_versions(
        &self,
        target: &Target,
        field: &str,
        children: &[(Bson, String)],
    ) -> Result<Vec<(Bson, String, SourceVersion)>> {
        if children.is_empty() {
            return Ok(Vec::new());
        }
        validate_field(field).map_err(|reason| MongoError::InvalidWrite {
            collection: target.collection.clone(),
            id: None,
            reason,
        })?;
        let client = self.client();
        let layout = client
            .layout(target.database.as_deref(), &target.collection)
            .await?;
        let fields = self.version_fields();
        let entries = format!("{CHILDREN_FIELD}.{field}");
        let mut parents: Vec<Bson> = children.iter().map(|(id, _)| id.clone()).collect();
        parents.dedup();
        let found: Vec<Document> = client
            .database(Some(&layout.database))
            .collection::<Document>(&layout.live)
            .find(doc! { "_id": { "$in": parents } })
            .projection(doc! { "_id": 1, &entries: 1 })
            .await
            .map_err(|e| MongoError::mongo("find", layout.live.clone(), None, e))?
            .try_collect()
            .await
            .map_err(|e| MongoError::mongo("find", layout.live.clone(), None, e))?;
        let mut out = Vec::new();
        for (id, key) in children {
            let entry = found
                .iter()
                .find(|d| d.get("_id") == Some(id))
                .and_then(|d| d.get_document(CHILDREN_FIELD).ok())
                .and_then(|c| c.get_document(field).ok())
                .and_then(|f| f.get_document(key).ok());
            let Some(entry) = entry else {
                continue;
            };
            if entry.get_bool(DELETED_FIELD).unwrap_or(false) {
                continue;
            }
            out.push((id.clone(), key.clone(), fields.read(entry, &layout.live)?));
        }
        Ok(out)
    }
}
