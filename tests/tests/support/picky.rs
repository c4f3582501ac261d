//! A Rust projection that refuses some rows until it is fixed: the poison message of the
//! dead-letter and hardening tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bson::{Bson, doc};
use cqrs_core::{Projection, ReadModelWrite, Target};
use sync_service::envelope::{Change, Op};
use sync_service::map::MongoWrite;

/// Refuses rows named "poison" until `fixed`; writes `{name, body_len}` into `items`.
pub struct Picky {
    pub fixed: Arc<AtomicBool>,
}

impl Picky {
    pub fn new(fixed: bool) -> Self {
        Picky {
            fixed: Arc::new(AtomicBool::new(fixed)),
        }
    }
}

/// What `Picky` says of a poisoned row.
#[derive(Debug, thiserror::Error)]
#[error("cannot project a poisoned row")]
pub struct Poisoned;

impl Projection for Picky {
    type Input = Change;
    type Write = MongoWrite;
    type Error = Poisoned;

    fn name(&self) -> &str {
        "picky"
    }

    fn project(&self, change: &Change) -> Result<Vec<MongoWrite>, Poisoned> {
        let target = Target::collection("items");
        let Some(row) = change.row() else {
            return Ok(vec![]);
        };
        let id = row.get("id").cloned().unwrap_or(Bson::Null);
        if change.op == Op::Delete {
            return Ok(vec![ReadModelWrite::Delete {
                target,
                id,
                version: change.version,
            }]);
        }
        if row.get_str("name") == Ok("poison") && !self.fixed.load(Ordering::SeqCst) {
            return Err(Poisoned);
        }
        let body_len = row.get_str("body").map(str::len).unwrap_or(0) as i64;
        Ok(vec![ReadModelWrite::Replace {
            target,
            id,
            version: change.version,
            document: doc! {
                "name": row.get("name").cloned().unwrap_or(Bson::Null),
                "body_len": body_len,
            },
        }])
    }
}
