//! Parquet corpora as Hugging Face `datasets` writes them (`Dataset.to_parquet`, and the files
//! the hub serves): a `tokens` list-of-strings column and a `ner_tags` list column of strings or
//! of `ClassLabel` integers, whose names `datasets` stores in the file's `huggingface` key-value
//! metadata. Read with the `parquet` crate's row reader, only the two columns projected.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::read::{class_label_names, tag_names_beside, ReadOptions, TaggedFile, TaggedSentence};
use crate::error::{Error, Result};

/// The `ClassLabel` names of `ner_tags` in the file's `huggingface` metadata, if any.
fn embedded_tag_names(reader: &SerializedFileReader<File>) -> Option<Vec<String>> {
    let kv = reader.metadata().file_metadata().key_value_metadata()?;
    let text = kv.iter().find(|e| e.key == "huggingface")?.value.as_ref()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    class_label_names(&value["info"]["features"])
}

pub fn read_parquet(path: &Path, options: &ReadOptions) -> Result<TaggedFile> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| Error::invalid(path, format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr().root_schema().clone();
    let fields = schema.get_fields();
    let find = |names: &[&str]| fields.iter().find(|f| names.contains(&f.name())).cloned();
    let present = || fields.iter().map(|f| f.name().to_string()).collect::<Vec<_>>().join(", ");
    let tokens_field = find(&["tokens"])
        .ok_or_else(|| Error::invalid(path, format!("no \"tokens\" column (columns: {})", present())))?;
    let tags_field = find(&["ner_tags", "tags"])
        .ok_or_else(|| Error::invalid(path, format!("no \"ner_tags\" column (columns: {})", present())))?;
    let tags_name = tags_field.name().to_string();
    let projection = Type::group_type_builder(schema.name())
        .with_fields(vec![tokens_field, tags_field])
        .build()
        .map_err(|e| Error::invalid(path, format!("Parquet schema: {e}")))?;

    let from_file = match &options.tag_names {
        Some(_) => None,
        None => match embedded_tag_names(&reader) {
            Some(n) => Some(n),
            None => tag_names_beside(path)?,
        },
    };
    let names = options.tag_names.clone().or_else(|| from_file.clone());
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| Error::invalid(path, format!("reading the tokens and {tags_name} columns: {e}")))?;
    let mut out = Vec::new();
    for (index, row) in rows.enumerate() {
        let row_no = index + 1;
        let row = row.map_err(|e| Error::parse(path, row_no, e.to_string()))?;
        let mut tokens = None;
        let mut tags = None;
        for (name, field) in row.get_column_iter() {
            let list = match field {
                Field::ListInternal(list) => list.elements(),
                Field::Null => &[][..],
                other => return Err(Error::parse(path, row_no, format!("column {name} is {other}, not a list"))),
            };
            if name == "tokens" {
                tokens = Some(list);
            } else {
                tags = Some(list);
            }
        }
        let (tokens, tags) = (tokens.unwrap_or(&[]), tags.unwrap_or(&[]));
        if tokens.len() != tags.len() {
            return Err(Error::parse(path, row_no, format!("{} tokens but {} {tags_name}", tokens.len(), tags.len())));
        }
        let mut s = TaggedSentence { words: vec![], tags: vec![], lines: vec![row_no; tokens.len()] };
        for (tok, tag) in tokens.iter().zip(tags) {
            let Field::Str(word) = tok else {
                return Err(Error::parse(path, row_no, format!("token {tok} is not a string")));
            };
            let tag_value = match tag {
                Field::Str(s) => serde_json::Value::String(s.clone()),
                Field::Byte(i) => (*i as i64).into(),
                Field::Short(i) => (*i as i64).into(),
                Field::Int(i) => (*i as i64).into(),
                Field::Long(i) => (*i).into(),
                Field::UByte(i) => (*i as u64).into(),
                Field::UShort(i) => (*i as u64).into(),
                Field::UInt(i) => (*i as u64).into(),
                Field::ULong(i) => (*i).into(),
                other => return Err(Error::parse(path, row_no, format!("tag {other} is neither string nor int"))),
            };
            s.words.push(word.clone());
            s.tags.push(super::read::tag_of(
                &tag_value,
                names.as_deref(),
                path,
                row_no,
                "ClassLabel names in the file's metadata, or a labels.json beside it",
            )?);
        }
        if !s.words.is_empty() {
            out.push(s);
        }
    }
    Ok(TaggedFile { sentences: out, tag_names: from_file })
}
