//! Corpora: sentences of words with label ids over a label set; the readers of every file
//! format (`read`: columns, JSON Lines; `parquet`), tagging schemes (`scheme`: IOB1, IOB2,
//! BIOES, BILOU, all read into IOB2), the PAN-X directory layout and the book's "Swiss"
//! sampling of it.

pub mod parquet;
pub mod read;
pub mod scheme;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

pub use read::{
    read_corpus, read_corpus_with_report, read_training_pair, Format, ReadOptions, ReadReport, UnknownLabels,
};
pub use scheme::Scheme;

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

    /// The label set for a collection of observed IOB2 tags: `O`, then `B-`/`I-` of every
    /// entity type in alphabetical order; PAN-X's own order when the types are PAN-X's three.
    pub fn infer<'a>(tags: impl IntoIterator<Item = &'a str>) -> Self {
        let mut types = BTreeSet::new();
        for tag in tags {
            if let Some((_, ty)) = split_bio(tag) {
                types.insert(ty.to_string());
            }
        }
        if types.iter().map(String::as_str).eq(["LOC", "ORG", "PER"]) {
            return Self::panx();
        }
        let mut names = vec!["O".to_string()];
        for ty in types {
            names.push(format!("B-{ty}"));
            names.push(format!("I-{ty}"));
        }
        Self::new(names)
    }

    /// A label set the user names (`--labels`): `O` and IOB2 tags, each once, `O` included.
    pub fn from_names(names: Vec<String>, source: &str) -> Result<Self> {
        let mut seen = BTreeSet::new();
        for name in &names {
            if name != "O" && split_bio(name).is_none() {
                return Err(Error::Usage(format!("{source}: {name:?} is not O, B-TYPE or I-TYPE")));
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::Usage(format!("{source}: {name} is named twice")));
            }
        }
        if !seen.contains("O") {
            return Err(Error::Usage(format!("{source}: the label set needs O")));
        }
        Ok(Self::new(names))
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

/// `--labels`: a file (a JSON list, or one name a line) or comma-separated names.
pub fn parse_label_list(arg: &str) -> Result<Vec<String>> {
    let path = std::path::Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        if text.trim_start().starts_with('[') {
            return serde_json::from_str(&text)
                .map_err(|e| Error::invalid(path, format!("expected a JSON list of label names: {e}")));
        }
        return Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect());
    }
    Ok(arg.split(',').map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
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
        read_corpus(&path, &ReadOptions::panx())
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
        assert_eq!(LabelSet::infer(["O", "B-LOC", "I-PER", "B-ORG"]), LabelSet::panx());
        assert_eq!(LabelSet::infer(["O", "B-LOC"]).names(), ["O", "B-LOC", "I-LOC"]);
    }

    #[test]
    fn fracs_parse_and_reject() {
        assert_eq!(parse_fracs("de=0.5, fr=1").unwrap(), vec![("de".into(), 0.5), ("fr".into(), 1.0)]);
        assert!(parse_fracs("de").is_err());
        assert!(parse_fracs("de=2").is_err());
    }
}
