//! Entities as transformers' `TokenClassificationPipeline` returns them (its `postprocess`:
//! `gather_pre_entities` → `aggregate` → `group_entities`, `ignore_labels=["O"]`), for every
//! `aggregation_strategy`, with the same scores (softmax of the logits) and character offsets.
//! Each function below names the pipeline method it follows; tests/pipeline_parity.rs checks
//! the results against the pipeline's own on fixtures made by scripts/pipeline_fixtures.py.
//!
//! One addition, `Words` (xner's default): the tokenizer's own word boundaries (its
//! pre-tokenizer's words, as training and evaluation use them), each word labelled by its first
//! subword (the book's rule), entities read from the word tags as seqeval reads them. The
//! pipeline's `first`/`average`/`max` find words with a spacing heuristic instead on SentencePiece
//! tokenizers, which glues punctuation to the word before it (`Google,`).

use serde::Serialize;
use tokenizers::Encoding;

use crate::metrics;

/// How subword predictions become entities (`aggregation_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// The tokenizer's words, each labelled by its first subword; seqeval's entity chunks.
    #[default]
    Words,
    /// The pipeline's `none`: one entry per subword with its B-/I- tag.
    None,
    /// The pipeline's `simple`: subwords grouped by tag, no word boundaries.
    Simple,
    /// The pipeline's `first`: a word takes its first subword's label.
    First,
    /// The pipeline's `average`: a word takes the label of its subwords' mean scores.
    Average,
    /// The pipeline's `max`: a word takes the label of its most confident subword.
    Max,
}

/// An entity: its label (the type, or for `none` the subword's tag), the input text it spans,
/// its character offsets (end exclusive) and its score.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Entity {
    pub label: String,
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub score: f32,
    /// The subword's position (`none` only), as the pipeline's `index`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// What the tokenizer says about how words are split, for `gather_pre_entities`.
#[derive(Clone, Copy, Debug)]
pub struct TokenizerKind {
    /// The model's `continuing_subword_prefix` is set (WordPiece's `##`): subwords are known.
    pub has_subword_prefix: bool,
    pub unk_id: Option<u32>,
}

impl TokenizerKind {
    pub fn of(tokenizer: &tokenizers::Tokenizer) -> TokenizerKind {
        let json = serde_json::to_value(tokenizer.get_model()).unwrap_or_default();
        let prefix = json.get("continuing_subword_prefix").and_then(|p| p.as_str()).is_some_and(|p| !p.is_empty());
        let unk = json.get("unk_token").and_then(|t| t.as_str()).and_then(|t| tokenizer.token_to_id(t));
        let unk = unk.or_else(|| json.get("unk_id").and_then(|i| i.as_u64()).map(|i| i as u32));
        TokenizerKind { has_subword_prefix: prefix, unk_id: unk }
    }
}

/// One subword before aggregation (`pre_entity`).
struct PreEntity {
    probs: Vec<f32>,
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

/// Softmax rows from log-probabilities (the pipeline's softmax of the logits).
fn probabilities(log_probs: &[f32]) -> Vec<f32> {
    log_probs.iter().map(|&l| l.exp()).collect()
}

fn argmax(v: &[f32]) -> usize {
    crate::window::best_label(v).0
}

/// `gather_pre_entities`: every non-special token with its scores, span and subword flag.
fn gather(text: &[char], enc: &Encoding, log_probs: &[Vec<f32>], kind: TokenizerKind) -> Vec<PreEntity> {
    let mut out = vec![];
    for (idx, lp) in log_probs.iter().enumerate() {
        if enc.get_special_tokens_mask()[idx] == 1 {
            continue;
        }
        let (start, end) = enc.get_offsets()[idx];
        let (start, end) = (start.min(text.len()), end.min(text.len()));
        let token = &enc.get_tokens()[idx];
        let mut is_subword = if kind.has_subword_prefix {
            token.chars().count() != end - start
        } else {
            // `start_ind > 0 and " " not in sentence[start_ind - 1 : start_ind + 1]`
            start > 0 && !text[start - 1..(start + 1).min(text.len())].contains(&' ')
        };
        if Some(enc.get_ids()[idx]) == kind.unk_id {
            is_subword = false;
        }
        out.push(PreEntity { probs: probabilities(lp), start, end, index: idx, is_subword });
    }
    out
}

/// A labelled span before grouping (`entity` in the pipeline).
struct Tagged {
    tag: String,
    score: f32,
    start: usize,
    end: usize,
    index: Option<usize>,
}

/// `aggregate_word`: one word's label and score from its subwords.
fn aggregate_word(group: &[PreEntity], strategy: Aggregation, labels: &[String]) -> Tagged {
    let (label, score) = match strategy {
        Aggregation::Max => {
            // `max(entities, key=lambda e: e["scores"].max())`: the first of equal maxima.
            let best = group.iter().fold(&group[0], |best, e| {
                let m = |e: &PreEntity| e.probs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                if m(e) > m(best) {
                    e
                } else {
                    best
                }
            });
            let i = argmax(&best.probs);
            (i, best.probs[i])
        }
        Aggregation::Average => {
            let n = group.len() as f32;
            let mean: Vec<f32> =
                (0..group[0].probs.len()).map(|k| group.iter().map(|e| e.probs[k]).sum::<f32>() / n).collect();
            let i = argmax(&mean);
            (i, mean[i])
        }
        _ => {
            let i = argmax(&group[0].probs);
            (i, group[0].probs[i])
        }
    };
    Tagged {
        tag: label_name(labels, label),
        score,
        start: group[0].start,
        end: group[group.len() - 1].end,
        index: None,
    }
}

fn label_name(labels: &[String], i: usize) -> String {
    labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"))
}

/// `get_tag`: B-/I- prefix and type; a tag without one continues (`I`).
fn split_tag(tag: &str) -> (char, &str) {
    match tag.split_once('-') {
        Some(("B", ty)) => ('B', ty),
        Some(("I", ty)) => ('I', ty),
        _ => ('I', tag),
    }
}

/// `group_entities` + `group_sub_entities`: consecutive spans of one type, a `B-` starting anew;
/// the group's score is the mean of its members'.
fn group(tagged: Vec<Tagged>) -> Vec<Tagged> {
    let mut groups: Vec<Vec<Tagged>> = vec![];
    for t in tagged {
        let joins = groups.last().and_then(|g| g.last()).is_some_and(|last| {
            let (bi, ty) = split_tag(&t.tag);
            let (_, last_ty) = split_tag(&last.tag);
            ty == last_ty && bi != 'B'
        });
        if joins {
            if let Some(g) = groups.last_mut() {
                g.push(t);
            }
        } else {
            groups.push(vec![t]);
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let ty = g[0].tag.split_once('-').map_or(g[0].tag.as_str(), |(_, ty)| ty).to_string();
            let score = g.iter().map(|t| t.score).sum::<f32>() / g.len() as f32;
            Tagged { tag: ty, score, start: g[0].start, end: g[g.len() - 1].end, index: None }
        })
        .collect()
}

/// The entities of one text from its encoding and per-token log-probabilities (`postprocess`).
pub fn entities(
    text: &str,
    enc: &Encoding,
    log_probs: &[Vec<f32>],
    labels: &[String],
    kind: TokenizerKind,
    strategy: Aggregation,
) -> Vec<Entity> {
    let chars: Vec<char> = text.chars().collect();
    let spans: Vec<Tagged> = match strategy {
        Aggregation::Words => return word_entities(&chars, enc, log_probs, labels),
        Aggregation::None | Aggregation::Simple => gather(&chars, enc, log_probs, kind)
            .into_iter()
            .map(|p| {
                let i = argmax(&p.probs);
                Tagged {
                    tag: label_name(labels, i),
                    score: p.probs[i],
                    start: p.start,
                    end: p.end,
                    index: Some(p.index),
                }
            })
            .collect(),
        _ => {
            let mut words = vec![];
            let mut current: Vec<PreEntity> = vec![];
            for p in gather(&chars, enc, log_probs, kind) {
                if !current.is_empty() && !p.is_subword {
                    words.push(aggregate_word(&current, strategy, labels));
                    current.clear();
                }
                current.push(p);
            }
            if !current.is_empty() {
                words.push(aggregate_word(&current, strategy, labels));
            }
            words
        }
    };
    let spans = if strategy == Aggregation::None { spans } else { group(spans) };
    spans
        .into_iter()
        .filter(|t| t.tag != "O")
        .map(|t| Entity {
            text: chars[t.start..t.end.max(t.start)].iter().collect(),
            label: t.tag,
            start: t.start,
            end: t.end,
            score: t.score,
            index: if strategy == Aggregation::None { t.index } else { None },
        })
        .collect()
}

/// Punctuation that opens a span: dropped from an entity's start (`«Le Monde»` → `Le Monde`).
const OPENING: [char; 8] = ['(', '[', '{', '"', '\'', '«', '„', '“'];

/// Whether a span's last character is punctuation glued to the word before it (SentencePiece
/// words are whitespace-separated: `Paris.`, `Berlin,`); a final `.` stays when the span has
/// another (`U.S.`).
fn closes(span: &[char]) -> bool {
    match span.last() {
        Some('.') => !span[..span.len() - 1].contains(&'.'),
        Some(c) => [',', ';', ':', '!', '?', ')', ']', '}', '"', '\'', '»', '“', '”'].contains(c),
        None => false,
    }
}

/// `Words`: the tokenizer's words (word ids), each labelled by its first subword; entities as
/// seqeval chunks the word tags; an entity's score is the mean of its words' first-subword
/// scores; spans without the leading space Metaspace offsets may carry, nor the punctuation
/// glued to their ends.
fn word_entities(chars: &[char], enc: &Encoding, log_probs: &[Vec<f32>], labels: &[String]) -> Vec<Entity> {
    let mut tags: Vec<String> = vec![];
    let mut scores: Vec<f32> = vec![];
    let mut spans: Vec<(usize, usize)> = vec![];
    let mut previous = None;
    for (j, w) in enc.get_word_ids().iter().enumerate() {
        let Some(w) = *w else { continue };
        let (s, e) = enc.get_offsets()[j];
        if Some(w) != previous {
            let probs = probabilities(&log_probs[j]);
            let i = argmax(&probs);
            tags.push(label_name(labels, i));
            scores.push(probs[i]);
            spans.push((s, e));
        } else if let Some(last) = spans.last_mut() {
            last.1 = e;
        }
        previous = Some(w);
    }
    metrics::get_entities(&tags)
        .into_iter()
        .map(|(label, first, last)| {
            let (mut start, end) = (spans[first].0.min(chars.len()), spans[last].1.min(chars.len()));
            while start < end && (chars[start].is_whitespace() || OPENING.contains(&chars[start])) {
                start += 1;
            }
            let mut end = end;
            while end > start + 1 && closes(&chars[start..end]) {
                end -= 1;
            }
            let score = scores[first..=last].iter().sum::<f32>() / (last + 1 - first) as f32;
            Entity { label, text: chars[start..end].iter().collect(), start, end, score, index: None }
        })
        .collect()
}
