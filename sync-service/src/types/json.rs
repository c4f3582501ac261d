//! JSON text (`io.debezium.data.Json`: `json`, `jsonb`) into BSON without losing digits.
//!
//! A general JSON parser reads every number as an `i64`/`u64` or a double, so a 30-digit
//! integer or `0.1000000000000000055511151231257827` silently became the nearest double.
//! Here each number keeps its text until its BSON type is chosen ([`number_to_bson`]):
//!
//! | JSON number | BSON |
//! |---|---|
//! | integer in Int32 / Int64 range | Int32 / Int64 |
//! | any other number whose value survives a round trip through a double (`0.1`, `1e-7`, `2.50`) | Double |
//! | integer beyond Int64, or a decimal a double would change, up to 34 significant digits | Decimal128, exact |
//! | beyond Decimal128 (more than 34 significant digits, or an exponent out of its range) | String holding the number's JSON text, exact |
//!
//! Objects keep their key order; strings are unescaped by `jiter` (pydantic's parser).

use bson::{Bson, Document};
use jiter::{Jiter, JiterError, Peek};

use super::decimal::decimal128_from_str;

/// JSON text that is not valid JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

impl From<JiterError> for JsonError {
    fn from(e: JiterError) -> Self {
        JsonError(e.to_string())
    }
}

/// Deepest nesting accepted (PostgreSQL's own `jsonb` limit is far below the stack).
const MAX_DEPTH: usize = 512;

/// Parses JSON text into BSON, numbers exact (see the module documentation).
///
/// ```
/// use bson::Bson;
/// use sync_service::types::json_text_to_bson;
///
/// let b = json_text_to_bson(r#"{"z":1,"big":123456789012345678901234567890,"f":0.1}"#).unwrap();
/// let doc = b.as_document().unwrap();
/// assert_eq!(doc.keys().collect::<Vec<_>>(), vec!["z", "big", "f"]);
/// assert_eq!(doc.get("f"), Some(&Bson::Double(0.1)));
/// assert_eq!(doc.get_decimal128("big").unwrap().to_string(), "123456789012345678901234567890");
/// ```
pub fn json_text_to_bson(text: &str) -> Result<Bson, JsonError> {
    let mut jiter = Jiter::new(text.as_bytes());
    let peek = jiter.peek()?;
    let value = value(&mut jiter, peek, 0)?;
    jiter.finish()?;
    Ok(value)
}

fn value(jiter: &mut Jiter<'_>, peek: Peek, depth: usize) -> Result<Bson, JsonError> {
    if depth > MAX_DEPTH {
        return Err(JsonError(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    Ok(match peek {
        Peek::Null => {
            jiter.known_null()?;
            Bson::Null
        }
        Peek::True | Peek::False => Bson::Boolean(jiter.known_bool(peek)?),
        Peek::String => Bson::String(jiter.known_str()?.to_owned()),
        Peek::Array => {
            let mut items = Vec::new();
            let mut next = jiter.known_array()?;
            while let Some(peek) = next {
                items.push(value(jiter, peek, depth + 1)?);
                next = jiter.array_step()?;
            }
            Bson::Array(items)
        }
        Peek::Object => {
            let mut doc = Document::new();
            let mut key = jiter.known_object()?.map(str::to_owned);
            while let Some(k) = key {
                let peek = jiter.peek()?;
                let v = value(jiter, peek, depth + 1)?;
                doc.insert(k, v);
                key = jiter.next_key()?.map(str::to_owned);
            }
            Bson::Document(doc)
        }
        peek if peek.is_num() => {
            let text = std::str::from_utf8(jiter.known_number_bytes(peek)?)
                .map_err(|e| JsonError(e.to_string()))?;
            number_to_bson(text)
        }
        other => return Err(JsonError(format!("unexpected {other:?}"))),
    })
}

/// The BSON of one JSON number given as its text, exact (see the module documentation).
///
/// ```
/// use bson::Bson;
/// use sync_service::types::number_to_bson;
///
/// assert_eq!(number_to_bson("42"), Bson::Int32(42));
/// assert_eq!(number_to_bson("3000000000"), Bson::Int64(3_000_000_000));
/// assert_eq!(number_to_bson("0.1"), Bson::Double(0.1));
/// assert_eq!(number_to_bson("1e-7"), Bson::Double(1e-7));
/// assert!(matches!(number_to_bson("12345678901234567890"), Bson::Decimal128(_)));
/// assert!(matches!(number_to_bson("0.10000000000000000555"), Bson::Decimal128(_)));
/// assert_eq!(number_to_bson("1234567890123456789012345678901234567"),
///     Bson::String("1234567890123456789012345678901234567".into()));
/// ```
pub fn number_to_bson(text: &str) -> Bson {
    let integral = !text.contains(['.', 'e', 'E']);
    if integral && let Ok(i) = text.parse::<i64>() {
        return match i32::try_from(i) {
            Ok(small) => Bson::Int32(small),
            Err(_) => Bson::Int64(i),
        };
    }
    if !integral
        && let Ok(f) = text.parse::<f64>()
        && f.is_finite()
        && same_value(text, &format!("{f:e}"))
    {
        return Bson::Double(f);
    }
    match decimal128_from_str(text) {
        Ok(d) => Bson::Decimal128(d),
        Err(_) => Bson::String(text.to_owned()),
    }
}

/// Sign, significant digits and the exponent of the last digit: `"-0.0120"` → `(true, "12", -3)`.
fn canonical(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut exp = exp.checked_sub(i64::try_from(frac_part.len()).ok()?)?;
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    exp = exp.checked_add(i64::try_from(significant.len() - trimmed.len()).ok()?)?;
    if trimmed.is_empty() {
        // zero, whatever its sign and exponent
        return Some((false, String::new(), 0));
    }
    Some((negative, trimmed.to_owned(), exp))
}

/// True when two decimal texts denote the same number.
fn same_value(a: &str, b: &str) -> bool {
    matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical("-0.0120"), Some((true, "12".into(), -3)));
        assert_eq!(canonical("1200"), Some((false, "12".into(), 2)));
        assert_eq!(canonical("1.5e3"), Some((false, "15".into(), 2)));
        assert_eq!(canonical("-0.0"), Some((false, String::new(), 0)));
        assert!(same_value("2.50", "2.5e0"));
        assert!(!same_value("0.1", "1e-2"));
    }

    fn decimal(b: &Bson) -> String {
        match b {
            Bson::Decimal128(d) => d.to_string(),
            other => panic!("not a Decimal128: {other:?}"),
        }
    }

    #[test]
    fn numbers_keep_their_digits() {
        let b = json_text_to_bson(
            r#"[1, -2147483649, 1.2345678901234567890, 123456789012345678901234567890, 1e400, -0.0, 2.5]"#,
        )
        .unwrap();
        let items = b.as_array().unwrap();
        assert_eq!(items[0], Bson::Int32(1));
        assert_eq!(items[1], Bson::Int64(-2_147_483_649));
        assert_eq!(decimal(&items[2]), "1.2345678901234567890");
        assert_eq!(decimal(&items[3]), "123456789012345678901234567890");
        assert_eq!(decimal(&items[4]), "1E+400");
        assert_eq!(items[5], Bson::Double(-0.0));
        assert_eq!(items[6], Bson::Double(2.5));
    }

    #[test]
    fn structure_escapes_and_errors() {
        let b =
            json_text_to_bson(r#"{"b":{"x":[true,false,null]},"a":"\u00e9\"\\\n\ud83d\udc22"}"#)
                .unwrap();
        let d = b.as_document().unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["b", "a"]);
        assert_eq!(d.get_str("a").unwrap(), "é\"\\\n🐢");
        assert!(json_text_to_bson("__debezium_unavailable_value").is_err());
        assert!(json_text_to_bson("[1,").is_err());
        assert!(json_text_to_bson("1 2").is_err());
        let deep = "[".repeat(600) + &"]".repeat(600);
        assert!(json_text_to_bson(&deep).is_err());
    }
}
