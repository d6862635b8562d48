//! The collection's payload schema file, `schema.json`: each payload field's type and whether
//! segments index it. Written (temp file, fsync, rename) before the first WAL record that uses
//! a new field, and when an index is declared; replay learns any field it lacks, so the file
//! can only be ahead of the data, never behind it.

use serde::{Deserialize, Serialize};

use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::payload::Schema;

/// The file's name in a collection's directory.
pub const FILE: &str = "schema.json";

#[derive(Serialize, Deserialize)]
struct SchemaFile {
    format: u32,
    #[serde(flatten)]
    schema: Schema,
}

/// Writes `schema` durably.
pub(super) fn store(dir: &dyn Directory, schema: &Schema) -> Result<()> {
    let file = SchemaFile {
        format: 1,
        schema: schema.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("a schema serialises");
    bytes.push(b'\n');
    dir.write_atomic(FILE, &bytes)
}

/// Reads the schema; a collection without the file (created before payloads existed, or
/// never given one) has none.
pub(super) fn load(dir: &dyn Directory) -> Result<Schema> {
    if !dir.list()?.iter().any(|f| f == FILE) {
        return Ok(Schema::default());
    }
    let bytes = dir.read(FILE)?;
    let path = dir.path_of(FILE);
    let f: SchemaFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(&path, format!("not a valid schema: {e}")))?;
    if f.format != 1 {
        return Err(Error::corrupt(
            &path,
            format!("schema format {} is unknown", f.format),
        ));
    }
    for name in f.schema.fields.keys() {
        crate::payload::check_name(name).map_err(|e| Error::corrupt(&path, e.to_string()))?;
    }
    Ok(f.schema)
}
