//! Property tests (proptest, fixed seed, bounded case counts): no reader (the corpus formats,
//! `xner score`'s file) ever panics, whatever the bytes; random column layouts read back exactly; and seqeval's metric scores random tag
//! sequences exactly as a brute-force reference written here from the definitions does.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use xner::data::{read_corpus, Format, ReadOptions, Scheme};
use xner::metrics::{self, Mode};

/// A runner with a fixed seed, so CI sees the same cases every time.
fn runner(cases: u32) -> TestRunner {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Bytes that are sometimes plausible input: random bytes, or lines of random words and tags.
fn corpus_bytes() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        "[a-zA-Z0-9.,]{1,6}",
        Just("O".to_string()),
        "[BIESLUX]-[A-Z]{0,3}",
        Just("-DOCSTART-".into()),
        Just("#".into()),
        Just("{".into()),
        Just("\"tokens\":".into()),
        Just("[".into())
    ];
    let line = prop::collection::vec(word, 0..5).prop_map(|w| w.join(if w.len() % 2 == 0 { "\t" } else { " " }));
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(line, 0..30).prop_map(|l| l.join("\n").into_bytes()),
        Just(b"PAR1".to_vec()),
    ]
}

#[test]
fn no_reader_panics_on_any_bytes() {
    let dir = common::tempdir();
    let mut runner = runner(400);
    let errors = std::cell::Cell::new(0);
    runner
        .run(
            &(corpus_bytes(), 0..3usize, prop::option::of(1u16..5), any::<bool>()),
            |(bytes, format, tag_column, fixed)| {
                let format = [Format::Columns, Format::Jsonl, Format::Parquet][format];
                let path = write(dir.path(), "input", &bytes);
                let options = ReadOptions {
                    format: Some(format),
                    tag_column: tag_column.map(usize::from),
                    labels: fixed.then(xner::data::LabelSet::panx),
                    ..Default::default()
                };
                // Ok or a typed error with a message: never a panic.
                if let Err(e) = read_corpus(&path, &options) {
                    prop_assert!(!e.to_string().is_empty());
                    errors.set(errors.get() + 1);
                }
                // `xner score`'s reader, and the report of whatever it read.
                if let Ok((gold, pred)) = metrics::read_score_file(&path) {
                    for mode in [Mode::Default, Mode::Strict] {
                        let _ = metrics::classification_report(&gold, &pred, mode);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(errors.get() > 100, "the cases reach the error paths ({})", errors.get());
}

/// A sentence of (token, tag) pairs with IOB2 tags of two types.
fn sentence() -> impl Strategy<Value = Vec<(String, String)>> {
    let tag = prop_oneof![
        Just("O".to_string()),
        Just("B-PER".to_string()),
        Just("I-PER".to_string()),
        Just("B-LOC".to_string()),
        Just("I-LOC".to_string())
    ];
    prop::collection::vec(("[a-zA-Zäöü]{1,7}", tag), 1..8)
}

#[test]
fn random_column_layouts_read_back_exactly() {
    let dir = common::tempdir();
    let mut runner = runner(200);
    let layout = (2usize..6, 0usize..6, 0usize..6, any::<bool>(), prop::collection::vec(sentence(), 1..5));
    runner
        .run(&layout, |(columns, token_at, tag_at, tabs, sentences)| {
            let (token_col, tag_col) = (token_at % columns, tag_at % columns);
            prop_assume!(token_col != tag_col);
            let sep = if tabs { "\t" } else { " " };
            let mut text = String::new();
            for (i, s) in sentences.iter().enumerate() {
                for (word, tag) in s {
                    let cells: Vec<String> = (0..columns)
                        .map(|c| {
                            if c == token_col {
                                word.clone()
                            } else if c == tag_col {
                                tag.clone()
                            } else {
                                format!("X{i}")
                            }
                        })
                        .collect();
                    text += &cells.join(sep);
                    text += "\n";
                }
                text += "\n";
            }
            let path = write(dir.path(), "layout.conll", text.as_bytes());
            let options = ReadOptions {
                format: Some(Format::Columns),
                token_column: Some(token_col + 1),
                tag_column: Some(tag_col + 1),
                scheme: Some(Scheme::Iob2),
                ..Default::default()
            };
            let corpus = read_corpus(&path, &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(corpus.len(), sentences.len());
            for (read, written) in corpus.sentences.iter().zip(&sentences) {
                let words: Vec<String> = written.iter().map(|(w, _)| w.clone()).collect();
                let tags: Vec<String> = written.iter().map(|(_, t)| t.clone()).collect();
                prop_assert_eq!(&read.words, &words);
                prop_assert_eq!(corpus.tags(read), tags);
            }
            Ok(())
        })
        .unwrap();
}

/// Entities by the definitions, one sentence at a time, as (sentence, start, end, type).
/// Default mode (conlleval's rule): an entity starts at `B-X`, or at an `I-X` that does not
/// continue an `X`, and runs over the `I-X` that follow. Strict IOB2: only `B-X` starts one.
fn reference_entities(sentences: &[Vec<String>], strict: bool) -> BTreeSet<(usize, usize, usize, String)> {
    let mut out = BTreeSet::new();
    for (s, tags) in sentences.iter().enumerate() {
        let mut i = 0;
        while i < tags.len() {
            let (prefix, ty) = tags[i].split_once('-').unwrap_or(("O", ""));
            let continues = i > 0 && tags[i - 1] != "O" && tags[i - 1][2..] == *ty;
            let starts = prefix == "B" || (!strict && prefix == "I" && !continues);
            if !starts {
                i += 1;
                continue;
            }
            let mut end = i + 1;
            while end < tags.len() && tags[end] == format!("I-{ty}") {
                end += 1;
            }
            out.insert((s, i, end, ty.to_string()));
            i = end;
        }
    }
    out
}

#[test]
fn the_metric_scores_random_tags_exactly_as_the_brute_force_reference() {
    let tag = prop_oneof![Just("O"), Just("B-PER"), Just("I-PER"), Just("B-LOC"), Just("I-LOC")].prop_map(String::from);
    let pair = prop::collection::vec(prop::collection::vec((tag.clone(), tag), 0..12), 1..8);
    let mut runner = runner(500);
    runner
        .run(&pair, |sentences| {
            let gold: Vec<Vec<String>> = sentences.iter().map(|s| s.iter().map(|p| p.0.clone()).collect()).collect();
            let pred: Vec<Vec<String>> = sentences.iter().map(|s| s.iter().map(|p| p.1.clone()).collect()).collect();
            for (mode, strict) in [(Mode::Default, false), (Mode::Strict, true)] {
                let report = metrics::classification_report(&gold, &pred, mode)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let (g, p) = (reference_entities(&gold, strict), reference_entities(&pred, strict));
                let mut by_type: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
                for e in &g {
                    by_type.entry(e.3.clone()).or_default().2 += 1;
                }
                for e in &p {
                    let c = by_type.entry(e.3.clone()).or_default();
                    c.0 += 1;
                    c.1 += g.contains(e) as usize;
                }
                let f1 = |pred: usize, tp: usize, gold: usize| {
                    let (pr, re) = (
                        if pred == 0 { 0.0 } else { tp as f64 / pred as f64 },
                        if gold == 0 { 0.0 } else { tp as f64 / gold as f64 },
                    );
                    if pr + re == 0.0 {
                        0.0
                    } else {
                        2.0 * pr * re / (pr + re)
                    }
                };
                let (tp, np, ng) = by_type.values().fold((0, 0, 0), |a, c| (a.0 + c.1, a.1 + c.0, a.2 + c.2));
                prop_assert!(
                    (report.micro.f1 - f1(np, tp, ng)).abs() < 1e-12,
                    "{mode:?}: {} vs {}",
                    report.micro.f1,
                    f1(np, tp, ng)
                );
                for (ty, (np, tp, ng)) in &by_type {
                    let row = report.per_type.get(ty).copied();
                    prop_assert!(row.is_some(), "{mode:?}: no row for {ty}");
                    let row = row.unwrap();
                    prop_assert_eq!(row.support, *ng);
                    prop_assert!((row.f1 - f1(*np, *tp, *ng)).abs() < 1e-12);
                }
            }
            Ok(())
        })
        .unwrap();
}
