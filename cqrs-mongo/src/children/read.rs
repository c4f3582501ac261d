//! Reading children: as an array in an aggregation, as a `Vec` in a typed model.

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

use bson::{Document, doc};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// An aggregation stage that turns the map of children `field` into an array of its
/// elements (in the order they were first written; an empty array when there is none),
/// for readers that want arrays:
///
/// ```
/// use cqrs_mongo::{bson::doc, children::array_view};
///
/// assert_eq!(
///     array_view("lines"),
///     doc! { "$set": { "lines": { "$map": {
///         "input": { "$objectToArray": { "$ifNull": ["$lines", {}] } },
///         "in": "$$this.v",
///     } } } }
/// );
/// // repository.aggregate(vec![doc! { "$match": { "_id": 7 } }, array_view("lines")])
/// ```
///
/// Add a `$sortArray` on one of the children's fields (MongoDB 5.2+) when the order
/// matters. A MongoDB view over the read model's view with this stage gives raw readers
/// (BI tools) arrays.
pub fn array_view(field: &str) -> Document {
    doc! { "$set": { field: { "$map": {
        "input": { "$objectToArray": { "$ifNull": [format!("${field}"), {}] } },
        "in": "$$this.v",
    } } } }
}

/// Deserializes a map of children (or an array) into a `Vec`, ordered by key (numbers
/// numerically, `"2"` before `"10"`): for the children field of a typed model. Pair it with
/// `skip_serializing`, so that the parent's own writes never carry the field (the children
/// are written one by one, by their own changes):
///
/// ```
/// use cqrs_mongo::bson::doc;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Line { sku: String, qty: u32 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Order {
///     #[serde(rename = "_id")]
///     id: i32,
///     #[serde(default, skip_serializing, deserialize_with = "cqrs_mongo::children::deserialize_vec")]
///     lines: Vec<Line>,
/// }
///
/// let stored = doc! { "_id": 7, "lines": {
///     "10": { "sku": "c", "qty": 3 }, "2": { "sku": "b", "qty": 2 }, "1": { "sku": "a", "qty": 1 },
/// } };
/// let order: Order = cqrs_mongo::bson::from_document(stored).unwrap();
/// let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
/// assert_eq!(skus, ["a", "b", "c"]);
/// assert!(!cqrs_mongo::bson::to_document(&order).unwrap().contains_key("lines"));
/// ```
pub fn deserialize_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_any(ChildrenVisitor(PhantomData))
}

struct ChildrenVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ChildrenVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of children by key, or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
        let mut entries: Vec<(String, T)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, T>()? {
            entries.push((key, value));
        }
        entries.sort_by(|(a, _), (b, _)| natural(a, b));
        Ok(entries.into_iter().map(|(_, v)| v).collect())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(value) = seq.next_element()? {
            out.push(value);
        }
        Ok(out)
    }

    fn visit_unit<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
}

/// Keys compared as integers when both are, else as text.
fn natural(a: &str, b: &str) -> Ordering {
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Bson;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Holder {
        #[serde(default, deserialize_with = "deserialize_vec")]
        lines: Vec<i32>,
    }

    #[test]
    fn maps_arrays_nulls_and_missing_fields_all_read() {
        let read = |d: Document| bson::from_document::<Holder>(d).unwrap().lines;
        assert_eq!(
            read(doc! { "lines": { "b": 3, "10": 2, "9": 1 } }),
            [1, 2, 3]
        );
        assert_eq!(read(doc! { "lines": [5, 4] }), [5, 4]);
        assert_eq!(read(doc! { "lines": Bson::Null }), Vec::<i32>::new());
        assert_eq!(read(doc! {}), Vec::<i32>::new());
        assert!(bson::from_document::<Holder>(doc! { "lines": { "1": "x" } }).is_err());
    }
}
