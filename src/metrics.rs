//! Entity-level scoring, a port of seqeval 1.2 (`seqeval.metrics.sequence_labeling`).
//!
//! One pipeline, as in seqeval: tags → entity chunks (default mode: the `end_of_chunk` /
//! `start_of_chunk` rule tables; strict mode: the IOB2 scheme's start/inside/end patterns) →
//! per-type sets of entities → set intersection → one precision/recall/F1 core behind every
//! number. Zero divisions give 0 (seqeval's `zero_division="warn"`). Parity with seqeval is
//! checked in `tests/seqeval_parity.rs` against values computed by `scripts/seqeval_fixtures.py`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::{Error, Result};

/// How entities are read from tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
pub enum Mode {
    /// seqeval's default (conlleval-like): lenient, an `I-` after `O` starts an entity.
    #[default]
    Default,
    /// seqeval's `mode="strict", scheme=IOB2`: an entity must start with `B-`.
    Strict,
}

/// An entity: its type and its span; `sentence` is 0 in default mode, where seqeval flattens
/// all sentences (with an `O` between them) and offsets are global.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entity {
    pub sentence: usize,
    pub start: usize,
    /// Inclusive in default mode, exclusive in strict mode, as in seqeval.
    pub end: usize,
    pub ty: String,
}

/// seqeval's split of a tag into prefix and type: `B-PER` → ('B', "PER"); `O` → ('O', "_").
fn default_parts(tag: &str) -> (char, String) {
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    // `chunk[1:].split('-', maxsplit=1)[-1] or '_'`
    let ty = match rest.split_once('-') {
        Some((_, after)) => after,
        None => rest,
    };
    (prefix, if ty.is_empty() { "_".to_string() } else { ty.to_string() })
}

fn end_of_chunk(prev_tag: char, tag: char, prev_type: &str, ty: &str) -> bool {
    matches!(
        (prev_tag, tag),
        ('E', _) | ('S', _) | ('B', 'B') | ('B', 'S') | ('B', 'O') | ('I', 'B') | ('I', 'S') | ('I', 'O')
    ) || (prev_tag != 'O' && prev_tag != '.' && prev_type != ty)
}

fn start_of_chunk(prev_tag: char, tag: char, prev_type: &str, ty: &str) -> bool {
    matches!(
        (prev_tag, tag),
        (_, 'B') | (_, 'S') | ('E', 'E') | ('E', 'I') | ('S', 'E') | ('S', 'I') | ('O', 'E') | ('O', 'I')
    ) || (tag != 'O' && tag != '.' && prev_type != ty)
}

/// seqeval's `get_entities` on one flat sequence: (type, start, end inclusive).
pub fn get_entities<S: AsRef<str>>(seq: &[S]) -> Vec<(String, usize, usize)> {
    let mut prev_tag = 'O';
    let mut prev_type = String::new();
    let mut begin = 0;
    let mut chunks = Vec::new();
    let tail = ["O"];
    let all = seq.iter().map(|s| s.as_ref()).chain(tail.iter().copied());
    for (i, chunk) in all.enumerate() {
        let (tag, ty) = default_parts(chunk);
        if end_of_chunk(prev_tag, tag, &prev_type, &ty) {
            chunks.push((prev_type.clone(), begin, i.saturating_sub(1)));
        }
        if start_of_chunk(prev_tag, tag, &prev_type, &ty) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = ty;
    }
    chunks
}

/// Default mode over sentences: seqeval flattens them with an `O` after each.
fn default_entities<S: AsRef<str>>(sentences: &[Vec<S>]) -> Vec<Entity> {
    let flat: Vec<&str> =
        sentences.iter().flat_map(|s| s.iter().map(|t| t.as_ref()).chain(std::iter::once("O"))).collect();
    get_entities(&flat).into_iter().map(|(ty, start, end)| Entity { sentence: 0, start, end, ty }).collect()
}

// ---- strict mode: seqeval.scheme.IOB2 ----------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefix {
    I,
    O,
    B,
}

struct StrictToken {
    prefix: Prefix,
    ty: String,
}

impl StrictToken {
    fn parse(tag: &str) -> Result<Self> {
        let mut chars = tag.chars();
        let prefix = match chars.next() {
            Some('I') => Prefix::I,
            Some('O') => Prefix::O,
            Some('B') => Prefix::B,
            _ => return Err(Error::Usage(format!("strict mode (IOB2): {tag:?} is not a valid tag"))),
        };
        // `token[1:].strip('-') or '_'`
        let ty = chars.as_str().trim_matches('-');
        Ok(StrictToken { prefix, ty: if ty.is_empty() { "_".into() } else { ty.into() } })
    }

    fn is_start(&self) -> bool {
        self.prefix == Prefix::B
    }

    fn is_inside(&self, prev: &StrictToken) -> bool {
        self.prefix == Prefix::I && matches!(prev.prefix, Prefix::B | Prefix::I) && prev.ty == self.ty
    }

    fn is_end(&self, prev: &StrictToken) -> bool {
        match (prev.prefix, self.prefix) {
            (Prefix::I | Prefix::B, Prefix::O | Prefix::B) => true,
            (Prefix::I | Prefix::B, Prefix::I) => prev.ty != self.ty,
            _ => false,
        }
    }
}

/// seqeval's `Tokens.entities` for one sentence under IOB2 (end exclusive).
fn strict_sentence_entities<S: AsRef<str>>(sentence_id: usize, tags: &[S]) -> Result<Vec<Entity>> {
    let mut tokens = tags.iter().map(|t| StrictToken::parse(t.as_ref())).collect::<Result<Vec<_>>>()?;
    tokens.push(StrictToken { prefix: Prefix::O, ty: "_".into() });
    let mut entities = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].is_start() {
            let mut end = i + 1;
            while end < tokens.len() && tokens[end].is_inside(&tokens[end - 1]) {
                end += 1;
            }
            let end = end.min(tokens.len() - 1);
            if tokens[end].is_end(&tokens[end - 1]) {
                entities.push(Entity { sentence: sentence_id, start: i, end, ty: tokens[i].ty.clone() });
            }
            i = end;
        } else {
            i += 1;
        }
    }
    Ok(entities)
}

/// The entities of a corpus of tag sequences under `mode`.
pub fn entities<S: AsRef<str>>(sentences: &[Vec<S>], mode: Mode) -> Result<Vec<Entity>> {
    match mode {
        Mode::Default => Ok(default_entities(sentences)),
        Mode::Strict => {
            let mut all = Vec::new();
            for (i, s) in sentences.iter().enumerate() {
                all.extend(strict_sentence_entities(i, s)?);
            }
            Ok(all)
        }
    }
}

// ---- the shared precision / recall / F1 core ---------------------------------------------

/// Counts for one entity type: predicted, true positives, gold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pred: usize,
    pub tp: usize,
    pub gold: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

fn divide(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Score {
    /// seqeval's `_precision_recall_fscore_support` for one row of counts (beta = 1).
    pub fn from_counts(c: Counts) -> Score {
        let precision = divide(c.tp, c.pred);
        let recall = divide(c.tp, c.gold);
        let denom = precision + recall;
        let f1 = if denom == 0.0 { 0.0 } else { 2.0 * precision * recall / denom };
        Score { precision, recall, f1, support: c.gold }
    }
}

/// Per-type counts, types sorted as seqeval sorts them.
pub fn count_by_type<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>], mode: Mode) -> Result<BTreeMap<String, Counts>> {
    if gold.len() != pred.len() {
        return Err(Error::Usage(format!("{} gold sentences but {} predicted", gold.len(), pred.len())));
    }
    for (i, (g, p)) in gold.iter().zip(pred).enumerate() {
        if g.len() != p.len() {
            return Err(Error::Usage(format!("sentence {i}: {} gold tags but {} predicted", g.len(), p.len())));
        }
    }
    let by_type = |ents: Vec<Entity>| {
        let mut map: BTreeMap<String, BTreeSet<Entity>> = BTreeMap::new();
        for e in ents {
            map.entry(e.ty.clone()).or_default().insert(e);
        }
        map
    };
    let gold_sets = by_type(entities(gold, mode)?);
    let pred_sets = by_type(entities(pred, mode)?);
    let empty = BTreeSet::new();
    let types: BTreeSet<&String> = gold_sets.keys().chain(pred_sets.keys()).collect();
    Ok(types
        .into_iter()
        .map(|ty| {
            let g = gold_sets.get(ty).unwrap_or(&empty);
            let p = pred_sets.get(ty).unwrap_or(&empty);
            (ty.clone(), Counts { pred: p.len(), tp: g.intersection(p).count(), gold: g.len() })
        })
        .collect())
}

/// seqeval's `classification_report(output_dict=True)`: per type and three averages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub per_type: BTreeMap<String, Score>,
    pub micro: Score,
    pub macro_avg: Score,
    pub weighted: Score,
}

impl Report {
    pub fn from_counts(counts: &BTreeMap<String, Counts>) -> Report {
        let per_type: BTreeMap<String, Score> =
            counts.iter().map(|(t, &c)| (t.clone(), Score::from_counts(c))).collect();
        let total = counts.values().fold(Counts::default(), |a, c| Counts {
            pred: a.pred + c.pred,
            tp: a.tp + c.tp,
            gold: a.gold + c.gold,
        });
        let micro = Score::from_counts(total);
        let n = per_type.len() as f64;
        let mean = |f: fn(&Score) -> f64| per_type.values().map(f).sum::<f64>() / n;
        let macro_avg = Score {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support: total.gold,
        };
        let weighted = if total.gold == 0 {
            Score { precision: 0.0, recall: 0.0, f1: 0.0, support: 0 }
        } else {
            let w = total.gold as f64;
            let wmean = |f: fn(&Score) -> f64| per_type.values().map(|s| f(s) * s.support as f64).sum::<f64>() / w;
            Score {
                precision: wmean(|s| s.precision),
                recall: wmean(|s| s.recall),
                f1: wmean(|s| s.f1),
                support: total.gold,
            }
        };
        Report { per_type, micro, macro_avg, weighted }
    }

    /// The report as seqeval prints it (digits = 4).
    pub fn to_text(&self) -> String {
        let width = self.per_type.keys().map(|k| k.len()).chain(["weighted avg".len()]).max().unwrap_or(12);
        let mut out =
            format!("{:>width$}  {:>9} {:>9} {:>9} {:>9}\n\n", "", "precision", "recall", "f1-score", "support");
        let row = |name: &str, s: &Score| {
            format!("{name:>width$}  {:>9.4} {:>9.4} {:>9.4} {:>9}\n", s.precision, s.recall, s.f1, s.support)
        };
        for (ty, s) in &self.per_type {
            out += &row(ty, s);
        }
        out += "\n";
        out += &row("micro avg", &self.micro);
        out += &row("macro avg", &self.macro_avg);
        out += &row("weighted avg", &self.weighted);
        out
    }
}

/// seqeval's `classification_report` on tag sequences.
pub fn classification_report<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>], mode: Mode) -> Result<Report> {
    Ok(Report::from_counts(&count_by_type(gold, pred, mode)?))
}

/// seqeval's `f1_score` (micro average), the number the book reports.
pub fn f1_score<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>], mode: Mode) -> Result<f64> {
    Ok(classification_report(gold, pred, mode)?.micro.f1)
}

/// Sentences of tags.
pub type TagSequences = Vec<Vec<String>>;

/// A `token gold pred` file for `xner score`: sentences of (gold, pred) tags.
pub fn read_score_file(path: &std::path::Path) -> Result<(TagSequences, TagSequences)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (mut gold, mut pred) = (vec![], vec![]);
    let (mut g, mut p) = (vec![], vec![]);
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            if !g.is_empty() {
                gold.push(std::mem::take(&mut g));
                pred.push(std::mem::take(&mut p));
            }
            continue;
        }
        if cols.len() < 3 {
            return Err(Error::parse(path, i + 1, format!("expected `token gold pred`, found {line:?}")));
        }
        g.push(cols[cols.len() - 2].to_string());
        p.push(cols[cols.len() - 1].to_string());
    }
    if !g.is_empty() {
        gold.push(g);
        pred.push(p);
    }
    if gold.is_empty() {
        return Err(Error::invalid(path, "empty file: no `token gold pred` lines"));
    }
    Ok((gold, pred))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mode_chunks_follow_seqeval_rules() {
        // seqeval's docstring example.
        let seq = ["B-PER", "I-PER", "O", "B-LOC"];
        assert_eq!(get_entities(&seq), vec![("PER".into(), 0, 1), ("LOC".into(), 3, 3)]);
        // I- after O starts an entity in default mode; a type change splits one.
        let seq = ["O", "I-ORG", "I-LOC"];
        assert_eq!(get_entities(&seq), vec![("ORG".into(), 1, 1), ("LOC".into(), 2, 2)]);
    }

    #[test]
    fn strict_mode_needs_a_b() {
        let ents = strict_sentence_entities(0, &["O", "I-ORG", "B-LOC", "I-LOC"]).unwrap();
        assert_eq!(ents, vec![Entity { sentence: 0, start: 2, end: 4, ty: "LOC".into() }]);
    }

    #[test]
    fn perfect_prediction_scores_one() {
        let gold = vec![vec!["B-PER", "I-PER", "O"], vec!["B-LOC"]];
        let r = classification_report(&gold, &gold, Mode::Default).unwrap();
        assert_eq!(r.micro.f1, 1.0);
        assert_eq!(r.micro.support, 2);
    }
}
