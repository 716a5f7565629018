//! Corpus reading: PAN-X/XTREME TSV, CoNLL-style columns and JSONL, into sentences of words
//! with label ids; the label set; and the book's "Swiss" sampling of PAN-X.
//!
//! Readers stream line by line (one pass, no quadratic work) and report bad input with the
//! file and line. Tags are interned while reading and mapped onto the final label set at the
//! end, so a file's label set can be inferred without a second pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::shuffle;

/// PAN-X's tags in the order of the Hugging Face `ClassLabel` (and so of the book).
pub const PANX_TAGS: [&str; 7] = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"];

/// The book's Swiss corpus: the share of each language's splits that is kept.
pub const SWISS_FRACS: [(&str, f64); 4] = [("de", 0.629), ("fr", 0.229), ("it", 0.084), ("en", 0.059)];

pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// The tag vocabulary: index ↔ name, `O` first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSet {
    names: Vec<String>,
    ids: HashMap<String, usize>,
}

impl LabelSet {
    pub fn new(names: Vec<String>) -> Self {
        let ids = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        LabelSet { names, ids }
    }

    pub fn panx() -> Self {
        Self::new(PANX_TAGS.iter().map(|s| s.to_string()).collect())
    }

    /// The label set for a collection of observed tags: PAN-X's when they fit in it, else `O`
    /// followed by `B-`/`I-` of every entity type in alphabetical order.
    pub fn infer<'a>(tags: impl IntoIterator<Item = &'a str>) -> Self {
        let mut types = BTreeSet::new();
        let mut all_panx = true;
        for tag in tags {
            all_panx &= PANX_TAGS.contains(&tag);
            if let Some((_, ty)) = split_bio(tag) {
                types.insert(ty.to_string());
            }
        }
        if all_panx {
            return Self::panx();
        }
        let mut names = vec!["O".to_string()];
        for ty in types {
            names.push(format!("B-{ty}"));
            names.push(format!("I-{ty}"));
        }
        Self::new(names)
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }
    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Entity types in label order (PER, ORG, LOC for PAN-X).
    pub fn entity_types(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for name in &self.names {
            if let Some((_, ty)) = split_bio(name) {
                if !seen.iter().any(|s: &String| s == ty) {
                    seen.push(ty.to_string());
                }
            }
        }
        seen
    }
}

/// `B-PER` → (`B`, `PER`); `O` and anything not B-/I- prefixed → None.
pub fn split_bio(tag: &str) -> Option<(char, &str)> {
    let (prefix, ty) = tag.split_once('-')?;
    match prefix {
        "B" | "I" if !ty.is_empty() => Some((prefix.chars().next()?, ty)),
        _ => None,
    }
}

fn is_valid_bio(tag: &str) -> bool {
    tag == "O" || split_bio(tag).is_some()
}

/// One sentence: its words and one label id per word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    pub words: Vec<String>,
    pub label_ids: Vec<usize>,
}

/// Sentences read from one file (or assembled from several), with their label set.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub labels: LabelSet,
    pub sentences: Vec<Sentence>,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.sentences.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sentences.is_empty()
    }

    /// The tags of a sentence as strings.
    pub fn tags(&self, sentence: &Sentence) -> Vec<String> {
        sentence.label_ids.iter().map(|&i| self.labels.name(i).to_string()).collect()
    }

    /// Number of entities per type, counted on `B-` tags as the book does.
    pub fn entity_counts(&self) -> BTreeMap<String, usize> {
        let mut counts: BTreeMap<String, usize> = self.labels.entity_types().into_iter().map(|t| (t, 0)).collect();
        for s in &self.sentences {
            for &id in &s.label_ids {
                if let Some(('B', ty)) = split_bio(self.labels.name(id)) {
                    *counts.entry(ty.to_string()).or_default() += 1;
                }
            }
        }
        counts
    }

    /// Keep the rows at `order[..n]`, in that order (as `Dataset.select`).
    pub fn select(&self, order: &[usize]) -> Corpus {
        Corpus { labels: self.labels.clone(), sentences: order.iter().map(|&i| self.sentences[i].clone()).collect() }
    }

    /// `Dataset.shuffle(seed).select(range(int(frac * n)))`, bit-exact.
    pub fn swiss_sample(&self, frac: f64, seed: u64) -> Corpus {
        let n = self.len();
        // Python's `int(frac * n)`: an f64 product truncated toward zero.
        let keep = ((frac * n as f64) as usize).min(n);
        let order = shuffle::permutation(seed, n);
        self.select(&order[..keep])
    }
}

/// Which reader a file needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `token<TAB>tag` or whitespace columns, token first and tag last (PAN-X, CoNLL).
    Columns,
    /// One `{"tokens": [...], "ner_tags": [...]}` object per line.
    Jsonl,
}

impl Format {
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("json") => Format::Jsonl,
            _ => Format::Columns,
        }
    }
}

/// Reads a corpus file. With `labels`, every tag must belong to it (integer tags in JSONL
/// index it); without, the label set is inferred from the file's tags.
pub fn read_corpus(path: &Path, labels: Option<&LabelSet>) -> Result<Corpus> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut builder = CorpusBuilder::new(path, labels);
    match Format::of(path) {
        Format::Columns => read_columns(path, &mut reader, &mut builder)?,
        Format::Jsonl => read_jsonl(path, &mut reader, &mut builder)?,
    }
    builder.finish()
}

/// Collects sentences with interned tags; validates tags as they come.
struct CorpusBuilder<'a> {
    path: &'a Path,
    fixed: Option<&'a LabelSet>,
    tag_names: Vec<String>,
    tag_ids: HashMap<String, usize>,
    sentences: Vec<Sentence>,
}

impl<'a> CorpusBuilder<'a> {
    fn new(path: &'a Path, fixed: Option<&'a LabelSet>) -> Self {
        CorpusBuilder { path, fixed, tag_names: vec![], tag_ids: HashMap::new(), sentences: vec![] }
    }

    fn intern(&mut self, tag: &str, line: usize) -> Result<usize> {
        if let Some(&id) = self.tag_ids.get(tag) {
            return Ok(id);
        }
        let known = match self.fixed {
            Some(set) => set.id(tag).is_some(),
            None => is_valid_bio(tag),
        };
        if !known {
            let expected = match self.fixed {
                Some(set) => format!("one of {}", set.names().join(" ")),
                None => "O, B-TYPE or I-TYPE (IOB2)".to_string(),
            };
            return Err(Error::parse(self.path, line, format!("unknown tag {tag:?}: expected {expected}")));
        }
        let id = self.tag_names.len();
        self.tag_names.push(tag.to_string());
        self.tag_ids.insert(tag.to_string(), id);
        Ok(id)
    }

    fn push(&mut self, words: Vec<String>, local_ids: Vec<usize>) {
        if !words.is_empty() {
            self.sentences.push(Sentence { words, label_ids: local_ids });
        }
    }

    fn finish(self) -> Result<Corpus> {
        if self.sentences.is_empty() {
            return Err(Error::invalid(self.path, "empty file: no sentences found"));
        }
        let labels = match self.fixed {
            Some(set) => set.clone(),
            None => LabelSet::infer(self.tag_names.iter().map(String::as_str)),
        };
        // Every interned tag is in `labels` by construction (validated or inferred from them).
        let remap: Vec<usize> =
            self.tag_names.iter().map(|t| labels.id(t).expect("interned tag in label set")).collect();
        let mut sentences = self.sentences;
        for s in &mut sentences {
            for id in &mut s.label_ids {
                *id = remap[*id];
            }
        }
        Ok(Corpus { labels, sentences })
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

fn read_columns(path: &Path, reader: &mut impl BufRead, out: &mut CorpusBuilder) -> Result<()> {
    let mut buf = Vec::new();
    let mut words = Vec::new();
    let mut ids = Vec::new();
    let mut line_no = 0;
    while let Some(line) = next_line(path, reader, &mut buf, line_no + 1)? {
        line_no += 1;
        if line.trim().is_empty() {
            out.push(std::mem::take(&mut words), std::mem::take(&mut ids));
            continue;
        }
        if line.starts_with("-DOCSTART-") {
            continue;
        }
        // Tabs separate columns when present (PAN-X tokens never hold tabs, but may hold
        // other whitespace); otherwise CoNLL's whitespace columns.
        let (word, tag) = if line.contains('\t') {
            let cols: Vec<&str> = line.split('\t').collect();
            (cols[0], cols[cols.len() - 1].trim())
        } else {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 2 {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!("missing tag column: expected `token<TAB>tag`, found {line:?}"),
                ));
            }
            (cols[0], cols[cols.len() - 1])
        };
        if tag.is_empty() {
            return Err(Error::parse(path, line_no, format!("missing tag column in {line:?}")));
        }
        ids.push(out.intern(tag, line_no)?);
        words.push(word.to_string());
    }
    out.push(words, ids);
    Ok(())
}

fn read_jsonl(path: &Path, reader: &mut impl BufRead, out: &mut CorpusBuilder) -> Result<()> {
    let panx = LabelSet::panx();
    let int_labels = out.fixed.cloned().unwrap_or(panx);
    let mut buf = Vec::new();
    let mut line_no = 0;
    while let Some(line) = next_line(path, reader, &mut buf, line_no + 1)? {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| Error::parse(path, line_no, format!("invalid JSON: {e}")))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_array())
                .ok_or_else(|| Error::parse(path, line_no, format!("missing array field {name:?}")))
        };
        let tokens = field("tokens")?;
        let tags = field("ner_tags")?;
        if tokens.len() != tags.len() {
            return Err(Error::parse(path, line_no, format!("{} tokens but {} ner_tags", tokens.len(), tags.len())));
        }
        let mut words = Vec::with_capacity(tokens.len());
        let mut ids = Vec::with_capacity(tokens.len());
        for (tok, tag) in tokens.iter().zip(tags) {
            let word =
                tok.as_str().ok_or_else(|| Error::parse(path, line_no, format!("token {tok} is not a string")))?;
            let tag_name = match tag {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => {
                    let i = n.as_u64().filter(|&i| (i as usize) < int_labels.len()).ok_or_else(|| {
                        Error::parse(path, line_no, format!("tag id {n} outside 0..{}", int_labels.len()))
                    })?;
                    int_labels.name(i as usize).to_string()
                }
                other => return Err(Error::parse(path, line_no, format!("tag {other} is neither string nor int"))),
            };
            ids.push(out.intern(&tag_name, line_no)?);
            words.push(word.to_string());
        }
        out.push(words, ids);
    }
    Ok(())
}

/// `de=0.629,fr=0.229` → [("de", 0.629), ("fr", 0.229)].
pub fn parse_fracs(text: &str) -> Result<Vec<(String, f64)>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|kv| {
            let (lang, frac) = kv
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--fracs: expected lang=fraction, got {kv:?}")))?;
            let frac: f64 =
                frac.trim().parse().map_err(|_| Error::Usage(format!("--fracs: {frac:?} is not a number")))?;
            if !(0.0..=1.0).contains(&frac) {
                return Err(Error::Usage(format!("--fracs: {frac} for {lang} is outside [0, 1]")));
            }
            Ok((lang.trim().to_string(), frac))
        })
        .collect()
}

/// The PAN-X directory layout: `DIR/<lang>/<split>.tsv`.
#[derive(Clone, Debug)]
pub struct PanxDir {
    pub root: PathBuf,
    pub fracs: Vec<(String, f64)>,
    pub seed: u64,
}

impl PanxDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PanxDir { root: root.into(), fracs: SWISS_FRACS.iter().map(|(l, f)| (l.to_string(), *f)).collect(), seed: 0 }
    }

    pub fn path(&self, lang: &str, split: &str) -> PathBuf {
        self.root.join(lang).join(format!("{split}.tsv"))
    }

    /// The fraction kept for `lang` (1.0 when none is given: the whole split).
    pub fn frac(&self, lang: &str) -> f64 {
        self.fracs.iter().find(|(l, _)| l == lang).map(|(_, f)| *f).unwrap_or(1.0)
    }

    /// A full split as in the files.
    pub fn load_full(&self, lang: &str, split: &str) -> Result<Corpus> {
        if !SPLITS.contains(&split) {
            return Err(Error::Usage(format!("unknown split {split:?}: expected one of {}", SPLITS.join(", "))));
        }
        let path = self.path(lang, split);
        if !path.exists() {
            return Err(Error::invalid(
                &path,
                format!("no such file: PAN-X data for language {lang:?} is expected at DIR/{lang}/{split}.tsv"),
            ));
        }
        read_corpus(&path, Some(&LabelSet::panx()))
    }

    /// A split of the Swiss corpus: shuffled with `seed` and cut to the language's fraction.
    pub fn load(&self, lang: &str, split: &str) -> Result<Corpus> {
        Ok(self.load_full(lang, split)?.swiss_sample(self.frac(lang), self.seed))
    }
}

/// The named split of several languages, concatenated in the order given; with more than
/// one language shuffled with `shuffle_seed` (as `concatenate_datasets(...).shuffle(seed)`),
/// then cut to `limit` rows (as `select(range(limit))`).
pub fn load_languages(
    panx: &PanxDir,
    langs: &[String],
    split: &str,
    shuffle_seed: u64,
    limit: Option<usize>,
) -> Result<Corpus> {
    let mut sentences = vec![];
    for lang in langs {
        sentences.extend(panx.load(lang, split)?.sentences);
    }
    let mut corpus = Corpus { labels: LabelSet::panx(), sentences };
    if langs.len() > 1 {
        let order = shuffle::permutation(shuffle_seed, corpus.len());
        corpus = corpus.select(&order);
    }
    if let Some(n) = limit {
        corpus.sentences.truncate(n);
    }
    Ok(corpus)
}

/// Rows and entity counts of one split of one language (the book's statistics table).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SplitStats {
    pub lang: String,
    pub split: String,
    pub rows: usize,
    /// Entities per type, counted on `B-` tags, types in alphabetical order.
    pub entities: BTreeMap<String, usize>,
}

/// Statistics of every split of every language of the (Swiss-sampled) corpus.
pub fn split_stats(panx: &PanxDir, langs: &[String]) -> Result<Vec<SplitStats>> {
    let mut out = Vec::new();
    for lang in langs {
        for split in SPLITS {
            let corpus = panx.load(lang, split)?;
            out.push(SplitStats {
                lang: lang.clone(),
                split: split.to_string(),
                rows: corpus.len(),
                entities: corpus.entity_counts(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bio_split() {
        assert_eq!(split_bio("B-PER"), Some(('B', "PER")));
        assert_eq!(split_bio("I-MISC-X"), Some(('I', "MISC-X")));
        assert_eq!(split_bio("O"), None);
        assert_eq!(split_bio("B-"), None);
        assert_eq!(split_bio("E-PER"), None);
    }

    #[test]
    fn inferred_labels_fall_back_to_sorted_types() {
        let set = LabelSet::infer(["O", "B-MISC", "I-PER", "B-PER"]);
        assert_eq!(set.names(), ["O", "B-MISC", "I-MISC", "B-PER", "I-PER"]);
        assert_eq!(LabelSet::infer(["O", "B-LOC"]), LabelSet::panx());
    }

    #[test]
    fn fracs_parse_and_reject() {
        assert_eq!(parse_fracs("de=0.5, fr=1").unwrap(), vec![("de".into(), 0.5), ("fr".into(), 1.0)]);
        assert!(parse_fracs("de").is_err());
        assert!(parse_fracs("de=2").is_err());
    }
}
