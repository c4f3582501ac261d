//! The registry's state: schemas by id, subjects with their versions, compatibility
//! settings, and the JSON data file that keeps them across restarts.
//!
//! Every change is made on a copy of the state, written to the data file (a temporary file
//! in the same directory, flushed, then renamed over the old one) and only then made
//! visible. A failed write therefore leaves both the file and the served state unchanged.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, StoreError};
use crate::schema;

/// The compatibility level a fresh registry reports, as Confluent's default.
pub const DEFAULT_COMPATIBILITY: &str = "BACKWARD";

/// The compatibility levels Confluent accepts.
pub const COMPATIBILITY_LEVELS: [&str; 7] = [
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];

/// How deep references may nest before a registration is refused.
const MAX_REFERENCE_DEPTH: usize = 32;

/// A reference from one schema to a schema registered under another subject, as in
/// Confluent's API: `{"name": ..., "subject": ..., "version": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    /// The name the referencing schema uses (for Avro, the referenced type's full name).
    pub name: String,
    /// The subject the referenced schema is registered under.
    pub subject: String,
    /// The version of that subject (`-1` means the latest at registration time).
    pub version: i64,
}

/// A schema as stored: its id, type, original text and canonical form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSchema {
    /// The global id, shared by every subject the schema is registered under.
    pub id: u32,
    /// `AVRO`, `JSON` or `PROTOBUF`.
    pub schema_type: String,
    /// The text exactly as first registered.
    pub schema: String,
    /// The canonical form used to recognise the same schema again.
    pub canonical: String,
    /// The schemas it references.
    #[serde(default)]
    pub references: Vec<SchemaReference>,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SubjectVersion {
    /// The version number, from 1 up, per subject.
    pub version: u32,
    /// The id of the schema registered as this version.
    pub id: u32,
}

/// Everything the registry knows; this is what the data file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    /// Format of the data file, for later changes.
    format: u32,
    schemas: Vec<StoredSchema>,
    subjects: BTreeMap<String, Vec<SubjectVersion>>,
    compatibility: String,
    #[serde(default)]
    subject_compatibility: BTreeMap<String, String>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            format: 1,
            schemas: Vec::new(),
            subjects: BTreeMap::new(),
            compatibility: DEFAULT_COMPATIBILITY.to_owned(),
            subject_compatibility: BTreeMap::new(),
        }
    }
}

/// A schema to register or look up, as a client sent it.
#[derive(Debug, Clone)]
pub struct NewSchema {
    /// The schema text.
    pub schema: String,
    /// The schema type as sent (`None` means `AVRO`).
    pub schema_type: Option<String>,
    /// The references as sent.
    pub references: Vec<SchemaReference>,
}

/// A schema as registered under a subject: what the subject/version endpoints return.
#[derive(Debug, Clone)]
pub struct SubjectSchema {
    /// The subject.
    pub subject: String,
    /// The version under the subject.
    pub version: u32,
    /// The schema (with its global id).
    pub schema: StoredSchema,
}

/// The result of a registration.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    /// The schema's global id.
    pub id: u32,
    /// Its version under the subject.
    pub version: u32,
    /// Whether this call added a version (false when the subject already had the schema).
    pub created: bool,
}

/// Which version of a subject a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// `latest` or `-1`.
    Latest,
    /// A version number.
    Number(u32),
}

impl VersionSpec {
    /// Parses a version path segment the way Confluent does.
    ///
    /// # Errors
    /// [`RegistryError::InvalidVersion`] for anything but `latest`, `-1` or 1..=2^31-1.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(Self::Latest);
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(Self::Number(n)),
            _ => Err(RegistryError::InvalidVersion(text.to_owned())),
        }
    }
}

/// The registry's state and, optionally, the file it is persisted to.
#[derive(Debug)]
pub struct Store {
    snapshot: Snapshot,
    data_file: Option<PathBuf>,
}

impl Store {
    /// An empty store that is never written anywhere.
    pub fn in_memory() -> Self {
        Self {
            snapshot: Snapshot::default(),
            data_file: None,
        }
    }

    /// Opens the store persisted at `data_file`: loads it when it exists, starts empty when
    /// it does not (the file is created with the first change).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file exists but cannot be read, [`StoreError::Corrupt`]
    /// when it is not a snapshot (it is never overwritten in that case).
    pub fn open(data_file: &Path) -> Result<Self, StoreError> {
        let snapshot = match std::fs::read(data_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: data_file.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: data_file.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self {
            snapshot,
            data_file: Some(data_file.to_path_buf()),
        })
    }

    /// How many schemas and subjects the store holds, for the start-up log.
    pub fn counts(&self) -> (usize, usize) {
        (self.snapshot.schemas.len(), self.snapshot.subjects.len())
    }

    /// Registers `new` under `subject`.
    ///
    /// The same schema (same type, references and canonical text) already under the subject
    /// returns its existing id and version. Otherwise the subject gets the next version; the
    /// id is the one the same schema already has under another subject, or a new one.
    ///
    /// # Errors
    /// [`RegistryError::InvalidSchema`] when the schema does not validate or a reference does
    /// not resolve; [`RegistryError::Store`] when the data file cannot be written.
    pub fn register(
        &mut self,
        subject: &str,
        new: &NewSchema,
    ) -> Result<Registered, RegistryError> {
        let (schema_type, canonical, references) = self.prepare(new)?;

        if let Some(found) = self.find_in_subject(subject, &schema_type, &canonical, &references) {
            return Ok(Registered {
                id: found.schema.id,
                version: found.version,
                created: false,
            });
        }

        let mut next = self.snapshot.clone();
        let existing = next
            .schemas
            .iter()
            .find(|s| same(s, &schema_type, &canonical, &references))
            .map(|s| s.id);
        let id = match existing {
            Some(id) => id,
            None => {
                let id = next.schemas.iter().map(|s| s.id).max().unwrap_or(0) + 1;
                next.schemas.push(StoredSchema {
                    id,
                    schema_type,
                    schema: new.schema.clone(),
                    canonical,
                    references,
                });
                id
            }
        };
        let versions = next.subjects.entry(subject.to_owned()).or_default();
        let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        versions.push(SubjectVersion { version, id });

        self.commit(next)?;
        Ok(Registered {
            id,
            version,
            created: true,
        })
    }

    /// Finds `new` among the versions of `subject`.
    ///
    /// # Errors
    /// [`RegistryError::SubjectNotFound`] when the subject does not exist,
    /// [`RegistryError::SchemaNotFound`] when the schema is not registered under it,
    /// [`RegistryError::InvalidSchema`] when the schema does not validate.
    pub fn lookup(&self, subject: &str, new: &NewSchema) -> Result<SubjectSchema, RegistryError> {
        if !self.snapshot.subjects.contains_key(subject) {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let (schema_type, canonical, references) = self.prepare(new)?;
        self.find_in_subject(subject, &schema_type, &canonical, &references)
            .ok_or_else(|| RegistryError::SchemaNotFound("Schema not found".to_owned()))
    }

    /// The schema with global id `id`.
    ///
    /// # Errors
    /// [`RegistryError::SchemaNotFound`] when there is none.
    pub fn schema_by_id(&self, id: u32) -> Result<&StoredSchema, RegistryError> {
        self.snapshot
            .schemas
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("Schema {id} not found")))
    }

    /// The highest id handed out so far (0 when empty).
    pub fn max_id(&self) -> u32 {
        self.snapshot
            .schemas
            .iter()
            .map(|s| s.id)
            .max()
            .unwrap_or(0)
    }

    /// Every `(subject, version)` the schema with id `id` is registered as.
    ///
    /// # Errors
    /// [`RegistryError::SchemaNotFound`] when there is no such schema.
    pub fn id_versions(&self, id: u32) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema_by_id(id)?;
        Ok(self
            .snapshot
            .subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |v| v.id == id)
                    .map(move |v| (subject.clone(), v.version))
            })
            .collect())
    }

    /// All subjects, sorted.
    pub fn subjects(&self) -> Vec<String> {
        self.snapshot.subjects.keys().cloned().collect()
    }

    /// The versions of `subject`, ascending.
    ///
    /// # Errors
    /// [`RegistryError::SubjectNotFound`] when the subject does not exist.
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        self.snapshot
            .subjects
            .get(subject)
            .map(|vs| vs.iter().map(|v| v.version).collect())
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))
    }

    /// One version of `subject`.
    ///
    /// # Errors
    /// [`RegistryError::SubjectNotFound`] or [`RegistryError::VersionNotFound`].
    pub fn subject_version(
        &self,
        subject: &str,
        version: VersionSpec,
    ) -> Result<SubjectSchema, RegistryError> {
        let versions = self
            .snapshot
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let entry = match version {
            VersionSpec::Latest => versions.iter().max_by_key(|v| v.version),
            VersionSpec::Number(n) => versions.iter().find(|v| v.version == n),
        };
        let entry = entry.ok_or_else(|| RegistryError::VersionNotFound {
            version: match version {
                VersionSpec::Latest => "latest".to_owned(),
                VersionSpec::Number(n) => n.to_string(),
            },
        })?;
        Ok(SubjectSchema {
            subject: subject.to_owned(),
            version: entry.version,
            schema: self.schema_by_id(entry.id)?.clone(),
        })
    }

    /// The global compatibility level.
    pub fn compatibility(&self) -> &str {
        &self.snapshot.compatibility
    }

    /// The subject-level compatibility of `subject`, if one was set.
    pub fn subject_compatibility(&self, subject: &str) -> Option<&str> {
        self.snapshot
            .subject_compatibility
            .get(subject)
            .map(String::as_str)
    }

    /// Sets the global level (`subject` = `None`) or a subject's level. Only stored and
    /// reported: the stand-in never checks compatibility.
    ///
    /// # Errors
    /// [`RegistryError::InvalidCompatibilityLevel`] for an unknown level,
    /// [`RegistryError::Store`] when the data file cannot be written.
    pub fn set_compatibility(
        &mut self,
        subject: Option<&str>,
        level: &str,
    ) -> Result<String, RegistryError> {
        let level = level.to_ascii_uppercase();
        if !COMPATIBILITY_LEVELS.contains(&level.as_str()) {
            return Err(RegistryError::InvalidCompatibilityLevel(level));
        }
        let mut next = self.snapshot.clone();
        match subject {
            None => next.compatibility = level.clone(),
            Some(s) => {
                next.subject_compatibility
                    .insert(s.to_owned(), level.clone());
            }
        }
        self.commit(next)?;
        Ok(level)
    }

    /// Validates a request's schema; returns its normalized type, canonical form and
    /// references with `-1` versions resolved.
    fn prepare(
        &self,
        new: &NewSchema,
    ) -> Result<(String, String, Vec<SchemaReference>), RegistryError> {
        let schema_type = schema::normalize_type(new.schema_type.as_deref())?;
        if new.schema.trim().is_empty() {
            return Err(RegistryError::InvalidSchema("empty schema".to_owned()));
        }
        let mut references = Vec::with_capacity(new.references.len());
        let mut texts = Vec::new();
        for r in &new.references {
            let resolved = self.resolve_reference(r)?;
            self.collect_reference_texts(&resolved.schema, &mut texts, 0)?;
            references.push(SchemaReference {
                version: i64::from(resolved.version),
                ..r.clone()
            });
        }
        let canonical = schema::canonicalize(&schema_type, &new.schema, &texts)?;
        Ok((schema_type, canonical, references))
    }

    fn resolve_reference(&self, r: &SchemaReference) -> Result<SubjectSchema, RegistryError> {
        let spec = if r.version == -1 {
            VersionSpec::Latest
        } else {
            match u32::try_from(r.version) {
                Ok(n) if n >= 1 => VersionSpec::Number(n),
                _ => {
                    return Err(RegistryError::InvalidSchema(format!(
                        "reference '{}' has invalid version {}",
                        r.name, r.version
                    )));
                }
            }
        };
        self.subject_version(&r.subject, spec).map_err(|e| {
            RegistryError::InvalidSchema(format!(
                "reference '{}' ({} version {}) does not resolve: {e}",
                r.name, r.subject, r.version
            ))
        })
    }

    /// Adds the texts of `schema` and everything it references, dependencies first.
    fn collect_reference_texts(
        &self,
        schema: &StoredSchema,
        texts: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), RegistryError> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(RegistryError::InvalidSchema(
                "references nest too deeply".to_owned(),
            ));
        }
        for r in &schema.references {
            let resolved = self.resolve_reference(r)?;
            self.collect_reference_texts(&resolved.schema, texts, depth + 1)?;
        }
        if !texts.contains(&schema.schema) {
            texts.push(schema.schema.clone());
        }
        Ok(())
    }

    fn find_in_subject(
        &self,
        subject: &str,
        schema_type: &str,
        canonical: &str,
        references: &[SchemaReference],
    ) -> Option<SubjectSchema> {
        let versions = self.snapshot.subjects.get(subject)?;
        versions.iter().find_map(|v| {
            let stored = self.snapshot.schemas.iter().find(|s| s.id == v.id)?;
            same(stored, schema_type, canonical, references).then(|| SubjectSchema {
                subject: subject.to_owned(),
                version: v.version,
                schema: stored.clone(),
            })
        })
    }

    /// Persists `next`, then makes it the served state.
    fn commit(&mut self, next: Snapshot) -> Result<(), StoreError> {
        if let Some(path) = &self.data_file {
            write_atomically(path, &next)?;
        }
        self.snapshot = next;
        Ok(())
    }
}

fn same(
    s: &StoredSchema,
    schema_type: &str,
    canonical: &str,
    references: &[SchemaReference],
) -> bool {
    s.schema_type == schema_type && s.canonical == canonical && s.references == references
}

/// Writes the snapshot to a temporary file next to `path`, syncs it and renames it over
/// `path`, so a reader (or a crash) sees either the old or the new file, never a torn one.
fn write_atomically(path: &Path, snapshot: &Snapshot) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(snapshot).map_err(StoreError::Serialize)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".schema-registry-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(io)?;
    tmp.write_all(&bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> NewSchema {
        NewSchema {
            schema: text.to_owned(),
            schema_type: None,
            references: Vec::new(),
        }
    }

    const A: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#;
    const B: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"},{"name":"y","type":["null","string"],"default":null}]}"#;

    #[test]
    fn ids_and_versions() {
        let mut s = Store::in_memory();
        let r1 = s.register("t-value", &avro(A)).unwrap();
        assert_eq!((r1.id, r1.version, r1.created), (1, 1, true));
        let again = s.register("t-value", &avro(&format!("  {A}\n"))).unwrap();
        assert_eq!((again.id, again.version, again.created), (1, 1, false));
        let r2 = s.register("t-value", &avro(B)).unwrap();
        assert_eq!((r2.id, r2.version), (2, 2));
        // Same schema under another subject: same id, version 1 there.
        let other = s.register("u-value", &avro(A)).unwrap();
        assert_eq!((other.id, other.version), (1, 1));
        assert_eq!(s.id_versions(1).unwrap().len(), 2);
        assert_eq!(
            s.subject_version("t-value", VersionSpec::Latest)
                .unwrap()
                .version,
            2
        );
        assert_eq!(s.max_id(), 2);
        // The original text is kept.
        assert_eq!(s.schema_by_id(1).unwrap().schema, A);
    }

    #[test]
    fn lookup_errors() {
        let mut s = Store::in_memory();
        assert_eq!(s.lookup("t", &avro(A)).unwrap_err().error_code(), 40401);
        s.register("t", &avro(A)).unwrap();
        assert_eq!(s.lookup("t", &avro(B)).unwrap_err().error_code(), 40403);
        assert_eq!(s.lookup("t", &avro(A)).unwrap().version, 1);
        let err = s.subject_version("t", VersionSpec::Number(9)).unwrap_err();
        assert_eq!(err.error_code(), 40402);
    }

    #[test]
    fn version_spec() {
        assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("3").unwrap(), VersionSpec::Number(3));
        for bad in ["0", "-2", "x", "4294967295"] {
            assert_eq!(VersionSpec::parse(bad).unwrap_err().error_code(), 42202);
        }
    }

    #[test]
    fn references() {
        let mut s = Store::in_memory();
        s.register("a", &avro(A)).unwrap();
        let outer = NewSchema {
            schema: r#"{"type":"record","name":"B","fields":[{"name":"a","type":"A"}]}"#.to_owned(),
            schema_type: None,
            references: vec![SchemaReference {
                name: "A".to_owned(),
                subject: "a".to_owned(),
                version: -1,
            }],
        };
        let r = s.register("b", &outer).unwrap();
        assert_eq!(s.schema_by_id(r.id).unwrap().references[0].version, 1);
        let missing = NewSchema {
            references: vec![SchemaReference {
                name: "A".to_owned(),
                subject: "nope".to_owned(),
                version: 1,
            }],
            ..outer
        };
        assert_eq!(s.register("c", &missing).unwrap_err().error_code(), 42201);
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/registry.json");
        {
            let mut s = Store::open(&path).unwrap();
            s.register("t", &avro(A)).unwrap();
            s.set_compatibility(None, "full").unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.compatibility(), "FULL");
        assert_eq!(s.register("t", &avro(A)).unwrap().id, 1);
        assert_eq!(s.register("t", &avro(B)).unwrap().id, 2);
        // Only the data file is left in the directory: no temporary files.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("registry.json")]);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
