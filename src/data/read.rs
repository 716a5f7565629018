//! Corpus files as a user brings them: column files (CoNLL-2002/2003, PAN-X TSV, Flair-style),
//! JSON Lines (`{"tokens": [...], "ner_tags": [...]}`) and Parquet as Hugging Face `datasets`
//! writes it. Each reader yields sentences of words and tag strings with the line (or row) each
//! token came from; `read_corpus` then converts the tags to IOB2 and maps them onto a label set.
//!
//! Readers stream line by line and report bad input as `file:line: what is wrong`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::scheme::{self, Scheme};
use super::{Corpus, LabelSet, Sentence};
use crate::error::{Error, Result};

/// Which reader a file needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Whitespace- or tab-separated columns, one token a line, a blank line between sentences
    /// (CoNLL, PAN-X TSV); token first and tag last unless --token-column/--tag-column say.
    Columns,
    /// One JSON object a line with `tokens` and `ner_tags` (strings, or integers and a label list).
    Jsonl,
    /// A Parquet file with `tokens` and `ner_tags` list columns (`Dataset.to_parquet`).
    Parquet,
}

impl Format {
    /// By extension, else by content: Parquet's magic bytes, a `{` opening a JSON line.
    pub fn detect(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("parquet") => return Ok(Format::Parquet),
            Some("jsonl") | Some("json") | Some("ndjson") => return Ok(Format::Jsonl),
            _ => {}
        }
        let mut head = [0u8; 64];
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let n = file.read(&mut head).map_err(|e| Error::io(path, e))?;
        let head = &head[..n];
        if head.starts_with(b"PAR1") {
            return Ok(Format::Parquet);
        }
        let text = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(head);
        if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return Ok(Format::Jsonl);
        }
        Ok(Format::Columns)
    }
}

/// What to do with a tag the label set does not know (a validation or test file's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownLabels {
    /// Stop with the file, line and label.
    #[default]
    Error,
    /// Read it as `O` and say how many there were.
    AsO,
}

/// How to read a corpus file.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// None: from the extension and content.
    pub format: Option<Format>,
    /// 1-based column of the token (column files; default the first).
    pub token_column: Option<usize>,
    /// 1-based column of the tag (column files; default the last).
    pub tag_column: Option<usize>,
    /// The file's tagging scheme; None: detected.
    pub scheme: Option<Scheme>,
    /// A fixed label set (a model's, or the user's): every tag must be in it after conversion
    /// to IOB2. None: the label set is inferred from the file.
    pub labels: Option<LabelSet>,
    pub unknown: UnknownLabels,
    /// Names of integer tags (JSON Lines, Parquet), index = id. None: a `labels.json` or
    /// `dataset_info.json` beside the file, or the Parquet file's own `ClassLabel` names.
    pub tag_names: Option<Vec<String>>,
    /// What is otherwise a warning (tags that break their scheme's rules, unknown labels read
    /// as O) is an error.
    pub strict: bool,
}

impl ReadOptions {
    /// PAN-X's TSV files: IOB2 with its seven tags.
    pub fn panx() -> Self {
        ReadOptions {
            format: Some(Format::Columns),
            scheme: Some(Scheme::Iob2),
            labels: Some(LabelSet::panx()),
            ..Default::default()
        }
    }
}

/// One sentence as written in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedSentence {
    pub words: Vec<String>,
    pub tags: Vec<String>,
    /// The line (column files) or row/line (JSON Lines, Parquet; 1-based) of each token.
    pub lines: Vec<usize>,
}

/// What reading a file found, for `data stats` and the training log.
#[derive(Clone, Debug, Serialize)]
pub struct ReadReport {
    pub path: PathBuf,
    pub format: Format,
    /// The scheme the tags were read in, and whether it was detected (not given).
    pub scheme: Scheme,
    pub scheme_detected: bool,
    /// Tags that break the scheme's rules (an `I-` after `O` in IOB2, a lone `E-`).
    pub violations: usize,
    /// The first of them: `file:line: what`.
    pub first_violation: Option<String>,
    /// Tags outside the fixed label set read as `O` (`UnknownLabels::AsO`).
    pub unknown_as_o: usize,
    pub unknown_labels: Vec<String>,
}

/// Reads a corpus file into IOB2 sentences over a label set.
pub fn read_corpus(path: &Path, options: &ReadOptions) -> Result<Corpus> {
    Ok(read_corpus_with_report(path, options)?.0)
}

/// A training file and the validation file scored against it, with what reading each found:
/// the label set comes from the whole training file, and validation is read with it, so that a
/// label only validation has is an error (or `O`, as `options` say) instead of a new class.
pub fn read_training_pair(
    train: &Path,
    validation: &Path,
    options: &ReadOptions,
) -> Result<((Corpus, ReadReport), (Corpus, ReadReport))> {
    let train = read_corpus_with_report(train, options)?;
    let fixed = ReadOptions { labels: Some(train.0.labels.clone()), ..options.clone() };
    let validation = read_corpus_with_report(validation, &fixed)?;
    Ok((train, validation))
}

/// `read_corpus`, with what the reading found.
pub fn read_corpus_with_report(path: &Path, options: &ReadOptions) -> Result<(Corpus, ReadReport)> {
    let format = match options.format {
        Some(f) => f,
        None => Format::detect(path)?,
    };
    let TaggedFile { sentences: tagged, tag_names } = read_tagged(path, format, options)?;
    if tagged.is_empty() {
        return Err(Error::invalid(path, "empty file: no sentences found"));
    }
    let (scheme, scheme_detected) = match options.scheme {
        Some(s) => (s, false),
        None => (scheme::detect(tagged.iter().map(|s| s.tags.as_slice())), true),
    };
    let mut report = ReadReport {
        path: path.to_path_buf(),
        format,
        scheme,
        scheme_detected,
        violations: 0,
        first_violation: None,
        unknown_as_o: 0,
        unknown_labels: vec![],
    };
    let mut iob2: Vec<Vec<String>> = Vec::with_capacity(tagged.len());
    for s in &tagged {
        if let Some(i) = s.tags.iter().position(|t| !scheme::fits(t, scheme)) {
            return Err(Error::parse(
                path,
                s.lines[i],
                format!("{:?} is not a {} tag (O, {}-TYPE)", s.tags[i], scheme.name(), prefix_list(scheme)),
            ));
        }
        let found = scheme::violations(&s.tags, scheme);
        if let Some((i, what)) = found.first() {
            report.first_violation.get_or_insert_with(|| format!("{}:{}: {what}", path.display(), s.lines[*i]));
        }
        report.violations += found.len();
        iob2.push(scheme::to_iob2(&s.tags, scheme));
    }
    let labels = match (&options.labels, tag_names) {
        (Some(set), _) => set.clone(),
        // A `ClassLabel` list (or labels.json) in IOB2 is the label set, in its order, as
        // transformers' run_ner.py takes `features["ner_tags"].feature.names`.
        (None, Some(names)) if scheme == Scheme::Iob2 && LabelSet::from_names(names.clone(), "").is_ok() => {
            LabelSet::new(names)
        }
        _ => LabelSet::infer(iob2.iter().flatten().map(String::as_str)),
    };
    let mut sentences = Vec::with_capacity(tagged.len());
    for (s, tags) in tagged.into_iter().zip(iob2) {
        let mut label_ids = Vec::with_capacity(tags.len());
        for (i, tag) in tags.iter().enumerate() {
            let id = match labels.id(tag) {
                Some(id) => id,
                None if options.unknown == UnknownLabels::AsO => {
                    report.unknown_as_o += 1;
                    if !report.unknown_labels.contains(tag) {
                        report.unknown_labels.push(tag.clone());
                    }
                    labels.id("O").ok_or_else(|| Error::invalid(path, "the label set has no O"))?
                }
                None => {
                    return Err(Error::parse(
                        path,
                        s.lines[i],
                        format!(
                            "label {tag} is not in the model's label set ({}); --unknown-labels as-o reads it as O",
                            labels.names().join(" ")
                        ),
                    ))
                }
            };
            label_ids.push(id);
        }
        sentences.push(Sentence { words: s.words, label_ids });
    }
    if options.strict && report.violations > 0 {
        return Err(Error::invalid(
            path,
            format!(
                "{} tags break {}'s rules (--strict-data), first at {}",
                report.violations,
                scheme.name(),
                report.first_violation.as_deref().unwrap_or("?")
            ),
        ));
    }
    if options.strict && report.unknown_as_o > 0 {
        return Err(Error::invalid(
            path,
            format!(
                "{} tags unknown to the label set (--strict-data): {}",
                report.unknown_as_o,
                report.unknown_labels.join(" ")
            ),
        ));
    }
    Ok((Corpus { labels, sentences }, report))
}

fn prefix_list(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Iob1 | Scheme::Iob2 => "B-TYPE or I-TYPE",
        Scheme::Bioes => "B-, I-, E- or S-TYPE",
        Scheme::Bilou => "B-, I-, L- or U-TYPE",
    }
}

/// A file's sentences with their tags as written, and the names of its integer tags when it
/// had some (from the file's metadata or a labels.json beside it; not from --labels).
pub struct TaggedFile {
    pub sentences: Vec<TaggedSentence>,
    pub tag_names: Option<Vec<String>>,
}

/// The sentences of a file with their tags as written.
pub fn read_tagged(path: &Path, format: Format, options: &ReadOptions) -> Result<TaggedFile> {
    match format {
        Format::Columns => {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let sentences = read_columns(path, &mut BufReader::with_capacity(1 << 16, file), options)?;
            Ok(TaggedFile { sentences, tag_names: None })
        }
        Format::Jsonl => {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            read_jsonl(path, &mut BufReader::with_capacity(1 << 16, file), options)
        }
        Format::Parquet => super::parquet::read_parquet(path, options),
    }
}

/// Reads one line as UTF-8 without its line ending (LF or CRLF) and, on the first line, BOM.
fn next_line(path: &Path, reader: &mut impl BufRead, buf: &mut Vec<u8>, line_no: usize) -> Result<Option<String>> {
    buf.clear();
    let n = reader.read_until(b'\n', buf).map_err(|e| Error::io(path, e))?;
    if n == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n') | Some(b'\r')) {
        buf.pop();
    }
    let mut text = String::from_utf8(std::mem::take(buf))
        .map_err(|e| Error::parse(path, line_no, format!("invalid UTF-8: {e}")))?;
    if line_no == 1 && text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(Some(text))
}

/// Column files. Tabs separate columns when a line has them (PAN-X tokens may hold other
/// whitespace), else any whitespace (CoNLL). Every token line must have as many columns as
/// the first; `-DOCSTART-` lines and blank lines end a sentence; a `#` line before a
/// sentence's first token is a comment (CoNLL-U) when it holds `=` or has another number of
/// columns than the token lines.
fn read_columns(path: &Path, reader: &mut impl BufRead, options: &ReadOptions) -> Result<Vec<TaggedSentence>> {
    let mut out = Vec::new();
    let mut current = TaggedSentence { words: vec![], tags: vec![], lines: vec![] };
    let mut buf = Vec::new();
    let mut columns: Option<usize> = None;
    let mut line_no = 0;
    let finish = |s: &mut TaggedSentence, out: &mut Vec<TaggedSentence>| {
        if !s.words.is_empty() {
            out.push(std::mem::replace(s, TaggedSentence { words: vec![], tags: vec![], lines: vec![] }));
        }
    };
    while let Some(line) = next_line(path, reader, &mut buf, line_no + 1)? {
        line_no += 1;
        if line.trim().is_empty() || line.starts_with("-DOCSTART-") {
            finish(&mut current, &mut out);
            continue;
        }
        let cols: Vec<&str> =
            if line.contains('\t') { line.split('\t').collect() } else { line.split_whitespace().collect() };
        if current.words.is_empty() && line.starts_with('#') && (line.contains('=') || Some(cols.len()) != columns) {
            continue;
        }
        if cols.len() < 2 && options.tag_column.is_none() {
            return Err(Error::parse(
                path,
                line_no,
                format!("missing tag column: expected `token<TAB>tag`, found {line:?}"),
            ));
        }
        let expected = *columns.get_or_insert(cols.len());
        if cols.len() != expected {
            return Err(Error::parse(
                path,
                line_no,
                format!("{} columns where the file's first token line has {expected}: {line:?}", cols.len()),
            ));
        }
        let token_col = options.token_column.unwrap_or(1);
        let tag_col = options.tag_column.unwrap_or(expected);
        for (flag, col) in [("--token-column", token_col), ("--tag-column", tag_col)] {
            if col == 0 || col > expected {
                return Err(Error::parse(path, line_no, format!("{flag} {col}: the line has {expected} columns")));
            }
        }
        let word = cols[token_col - 1];
        let tag = cols[tag_col - 1].trim();
        if tag.is_empty() {
            return Err(Error::parse(path, line_no, format!("missing tag column in {line:?}")));
        }
        if scheme::parse_tag(tag).is_none() {
            return Err(Error::parse(
                path,
                line_no,
                format!(
                    "column {tag_col} holds {tag:?}, not a tag (O, B-TYPE, I-TYPE, …); --tag-column chooses another"
                ),
            ));
        }
        current.words.push(word.to_string());
        current.tags.push(tag.to_string());
        current.lines.push(line_no);
    }
    finish(&mut current, &mut out);
    Ok(out)
}

/// Names for integer tags: the option, else `labels.json` (a list) or `dataset_info.json`
/// (`datasets`' `features.ner_tags.feature.names`) beside the file.
pub fn tag_names_beside(path: &Path) -> Result<Option<Vec<String>>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let labels = dir.join("labels.json");
    if labels.exists() {
        let text = std::fs::read_to_string(&labels).map_err(|e| Error::io(&labels, e))?;
        let names: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(&labels, format!("expected a JSON list of label names: {e}")))?;
        if let Some(dup) = names.iter().enumerate().find_map(|(i, n)| names[..i].contains(n).then_some(n)) {
            return Err(Error::invalid(&labels, format!("{dup} is named twice")));
        }
        return Ok(Some(names));
    }
    let info = dir.join("dataset_info.json");
    if info.exists() {
        let text = std::fs::read_to_string(&info).map_err(|e| Error::io(&info, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::invalid(&info, format!("invalid JSON: {e}")))?;
        return match class_label_names(&value["features"]) {
            Some(names) => Ok(Some(names)),
            None => Err(Error::invalid(&info, "no features.ner_tags ClassLabel names")),
        };
    }
    Ok(None)
}

/// The `ClassLabel` names of `ner_tags` in a `datasets` features description: under
/// `ner_tags.feature.names` (a `Sequence`/`List` of `ClassLabel`) or `ner_tags.names`.
pub fn class_label_names(features: &serde_json::Value) -> Option<Vec<String>> {
    let tags = features.get("ner_tags").or_else(|| features.get("tags"))?;
    let names = tags.get("feature").and_then(|f| f.get("names")).or_else(|| tags.get("names"))?;
    names.as_array()?.iter().map(|n| n.as_str().map(String::from)).collect()
}

/// A tag given as a string or as an index into `names`.
pub(super) fn tag_of(
    value: &serde_json::Value,
    names: Option<&[String]>,
    path: &Path,
    line: usize,
    source_of_names: &str,
) -> Result<String> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => {
            let Some(names) = names else {
                return Err(Error::parse(
                    path,
                    line,
                    format!("integer tag {n} but no label names: pass --labels, or put {source_of_names}"),
                ));
            };
            n.as_u64()
                .and_then(|i| names.get(i as usize))
                .cloned()
                .ok_or_else(|| Error::parse(path, line, format!("tag id {n} outside 0..{}", names.len())))
        }
        other => Err(Error::parse(path, line, format!("tag {other} is neither a string nor an integer"))),
    }
}

fn read_jsonl(path: &Path, reader: &mut impl BufRead, options: &ReadOptions) -> Result<TaggedFile> {
    let mut names = options.tag_names.clone();
    let mut looked_beside = false;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    while let Some(line) = next_line(path, reader, &mut buf, line_no + 1)? {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| Error::parse(path, line_no, format!("invalid JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::parse(path, line_no, "expected a JSON object with \"tokens\" and \"ner_tags\""));
        }
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_array())
                .ok_or_else(|| Error::parse(path, line_no, format!("missing array field {name:?}")))
        };
        let tokens = field("tokens")?;
        let tags = if value.get("ner_tags").is_none() && value.get("tags").is_some() {
            field("tags")?
        } else {
            field("ner_tags")?
        };
        if tokens.len() != tags.len() {
            return Err(Error::parse(path, line_no, format!("{} tokens but {} ner_tags", tokens.len(), tags.len())));
        }
        if names.is_none() && !looked_beside && tags.iter().any(|t| t.is_number()) {
            looked_beside = true;
            names = tag_names_beside(path)?;
        }
        let mut s = TaggedSentence { words: vec![], tags: vec![], lines: vec![line_no; tokens.len()] };
        for (tok, tag) in tokens.iter().zip(tags) {
            let word =
                tok.as_str().ok_or_else(|| Error::parse(path, line_no, format!("token {tok} is not a string")))?;
            s.words.push(word.to_string());
            s.tags.push(tag_of(tag, names.as_deref(), path, line_no, "a labels.json list beside the file")?);
        }
        if !s.words.is_empty() {
            out.push(s);
        }
    }
    let tag_names = if options.tag_names.is_none() { names } else { None };
    Ok(TaggedFile { sentences: out, tag_names })
}
