//! `${VAR}` expansion inside string values and `SYNC__SECTION__KEY` overrides.
//!
//! Written here rather than on `figment` or `config`: neither expands `${VAR:-default}`
//! inside values (the form the Compose and Kubernetes files use), so either would need this
//! module's expansion on top of it, and the `SYNC__` overrides are the one thing they would
//! take over, in about a hundred lines here with their typing. Errors name the TOML key and the variable.

use std::collections::BTreeMap;

use toml::Value;

use super::ConfigError;

const PREFIX: &str = "SYNC__";

/// Expands `${VAR}` and `${VAR:-default}` in every string; `$${` stays a literal `${`.
pub(super) fn expand(
    value: &mut Value,
    vars: &BTreeMap<String, String>,
    key: &str,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if s.contains("${") => *s = expand_str(s, vars, key)?,
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, vars, &format!("{key}[{i}]"))?;
            }
        }
        Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                expand(v, vars, &child)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, vars: &BTreeMap<String, String>, key: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            return Err(ConfigError::key(key, "unterminated `${` in value"));
        };
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (vars.get(name), default) {
            (Some(v), None) => out.push_str(v),
            (Some(v), Some(_)) if !v.is_empty() => out.push_str(v),
            (_, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(ConfigError::key(
                    key,
                    format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                    ),
                ));
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies `SYNC__A__B=value` as `a.b = value`. Under `kafka.properties` the rest of the
/// name is joined with dots (`SYNC__KAFKA__PROPERTIES__SASL__PASSWORD` is
/// `sasl.password`); a numeric segment indexes an array (`SYNC__PROJECTION__0__COLLECTION`).
pub(super) fn apply_overrides(
    root: &mut Value,
    vars: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, raw) in vars.iter().filter(|(k, _)| k.starts_with(PREFIX)) {
        let mut segments: Vec<String> = name[PREFIX.len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        if segments.len() > 3 && segments[0] == "kafka" && segments[1] == "properties" {
            let property = segments.split_off(2).join(".");
            segments.push(property);
        }
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::key(
                name.clone(),
                "malformed override variable name",
            ));
        }
        set_path(root, &segments, raw, name)?;
    }
    Ok(())
}

fn set_path(root: &mut Value, path: &[String], raw: &str, var: &str) -> Result<(), ConfigError> {
    let dotted = path.join(".");
    let mut node = root;
    for (i, segment) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        node = match node {
            Value::Table(table) => {
                if last {
                    let typed = typed_like(table.get(segment), raw)
                        .map_err(|m| ConfigError::key(&dotted, format!("{m} (from {var})")))?;
                    table.insert(segment.clone(), typed);
                    return Ok(());
                }
                let is_index = path[i + 1].parse::<usize>().is_ok();
                table.entry(segment.clone()).or_insert_with(|| {
                    if is_index {
                        Value::Array(Vec::new())
                    } else {
                        Value::Table(Default::default())
                    }
                })
            }
            Value::Array(items) => {
                let index: usize = segment.parse().map_err(|_| {
                    ConfigError::key(
                        &dotted,
                        format!("`{segment}` is not an array index (from {var})"),
                    )
                })?;
                if index > items.len() {
                    return Err(ConfigError::key(
                        &dotted,
                        format!("index {index} skips entries (from {var})"),
                    ));
                }
                if index == items.len() {
                    items.push(Value::Table(Default::default()));
                }
                if last {
                    items[index] = typed_like(Some(&items[index]), raw)
                        .map_err(|m| ConfigError::key(&dotted, m))?;
                    return Ok(());
                }
                &mut items[index]
            }
            _ => {
                return Err(ConfigError::key(
                    &dotted,
                    format!("cannot override inside a scalar (from {var})"),
                ));
            }
        };
    }
    Ok(())
}

/// Gives `raw` the type of the value it replaces; a new value is an integer, a boolean
/// or a string by its look.
fn typed_like(existing: Option<&Value>, raw: &str) -> Result<Value, String> {
    Ok(match existing {
        Some(Value::Integer(_)) => Value::Integer(
            raw.parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        Some(Value::Float(_)) => Value::Float(
            raw.parse()
                .map_err(|_| format!("expected a number, got {raw:?}"))?,
        ),
        Some(Value::Boolean(_)) => Value::Boolean(
            raw.parse()
                .map_err(|_| format!("expected true or false, got {raw:?}"))?,
        ),
        Some(Value::Array(_)) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        _ => match (raw.parse::<i64>(), raw.parse::<bool>()) {
            (Ok(i), _) => Value::Integer(i),
            (_, Ok(b)) => Value::Boolean(b),
            _ => Value::String(raw.to_owned()),
        },
    })
}
