//! Corpus readers: the formats they accept and the errors they give for bad input.

mod common;

use std::path::Path;
use xner::data::{read_corpus, LabelSet, ReadOptions};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn fixed(labels: Option<&LabelSet>) -> ReadOptions {
    ReadOptions { labels: labels.cloned(), ..Default::default() }
}

fn error_of(path: &Path, labels: Option<&LabelSet>) -> String {
    read_corpus(path, &fixed(labels)).expect_err("bad input must be an error").to_string()
}

#[test]
fn tsv_conll_and_jsonl_give_the_same_sentences() {
    let dir = common::tempdir();
    let tsv =
        write(dir.path(), "a.tsv", "\u{feff}Jeff\tB-PER\r\nDean\tI-PER\r\n\r\nin\tO\r\nBonn\tB-LOC\r\n".as_bytes());
    let conll = write(
        dir.path(),
        "a.conll",
        b"-DOCSTART- -X- O O\n\nJeff NNP B-NP B-PER\nDean NNP I-NP I-PER\n\nin IN O O\nBonn NNP B-NP B-LOC\n",
    );
    // Integer tags are named by a labels.json beside the file (as `datasets` writes ClassLabel names).
    write(dir.path(), "labels.json", br#"["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]"#);
    let jsonl = write(
        dir.path(),
        "a.jsonl",
        b"{\"tokens\": [\"Jeff\", \"Dean\"], \"ner_tags\": [1, 2]}\n{\"tokens\": [\"in\", \"Bonn\"], \"ner_tags\": [\"O\", \"B-LOC\"]}\n",
    );
    let a = read_corpus(&tsv, &fixed(None)).unwrap();
    let b = read_corpus(&conll, &fixed(None)).unwrap();
    let c = read_corpus(&jsonl, &fixed(None)).unwrap();
    // Two types: O, then B-/I- of each alphabetically; the JSON Lines file's labels.json list is
    // its label set, in its order.
    assert_eq!(a.labels.names(), ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]);
    assert_eq!(c.labels, LabelSet::panx());
    assert_eq!(a.sentences, b.sentences);
    for (x, y) in a.sentences.iter().zip(&c.sentences) {
        assert_eq!((&x.words, a.tags(x)), (&y.words, c.tags(y)));
    }
    assert_eq!(a.sentences[0].words, ["Jeff", "Dean"]);
    assert_eq!(a.tags(&a.sentences[1]), ["O", "B-LOC"]);
}

#[test]
fn other_tag_sets_are_inferred_in_bio_order() {
    let dir = common::tempdir();
    let path = write(dir.path(), "m.tsv", b"x\tB-MISC\ny\tI-MISC\nz\tB-PER\n");
    let corpus = read_corpus(&path, &fixed(None)).unwrap();
    assert_eq!(corpus.labels.names(), ["O", "B-MISC", "I-MISC", "B-PER", "I-PER"]);
    assert_eq!(corpus.sentences[0].label_ids, vec![1, 2, 3]);
}

#[test]
fn missing_tag_column_names_file_and_line() {
    let dir = common::tempdir();
    let path = write(dir.path(), "bad.tsv", b"Jeff B-PER\nDean\n");
    let err = error_of(&path, None);
    assert!(err.contains("bad.tsv:2:") && err.contains("missing tag column"), "{err}");
}

#[test]
fn unknown_tag_names_file_and_line() {
    let dir = common::tempdir();
    let path = write(dir.path(), "bad.tsv", b"Jeff\tB-PER\n\nDean\tX-PER\n");
    let err = error_of(&path, None);
    assert!(err.contains("bad.tsv:3:") && err.contains("X-PER"), "{err}");
    // A tag outside a fixed label set is unknown too.
    let path = write(dir.path(), "misc.tsv", b"Jeff\tB-MISC\n");
    let err = error_of(&path, Some(&LabelSet::panx()));
    assert!(err.contains("misc.tsv:1:") && err.contains("B-MISC"), "{err}");
}

#[test]
fn empty_file_and_invalid_utf8_are_errors() {
    let dir = common::tempdir();
    let empty = write(dir.path(), "empty.tsv", b"\n\n");
    assert!(error_of(&empty, None).contains("empty.tsv: empty file"));
    let latin1 = write(dir.path(), "latin1.tsv", b"Jeff\tB-PER\nK\xf6ln\tB-LOC\n");
    let err = error_of(&latin1, None);
    assert!(err.contains("latin1.tsv:2:") && err.contains("UTF-8"), "{err}");
    let missing = dir.path().join("nope.tsv");
    assert!(error_of(&missing, None).contains("nope.tsv"));
}

#[test]
fn bad_jsonl_lines_are_located() {
    let dir = common::tempdir();
    let path = write(
        dir.path(),
        "bad.jsonl",
        b"{\"tokens\": [\"a\"], \"ner_tags\": [\"O\"]}\n{\"tokens\": [\"a\", \"b\"], \"ner_tags\": [\"O\"]}\n",
    );
    let err = error_of(&path, None);
    assert!(err.contains("bad.jsonl:2:") && err.contains("2 tokens but 1 ner_tags"), "{err}");
    let path = write(dir.path(), "range.jsonl", b"{\"tokens\": [\"a\"], \"ner_tags\": [9]}\n");
    assert!(error_of(&path, None).contains("range.jsonl:1:"));
}

#[test]
fn cli_reports_malformed_files_without_panicking() {
    let dir = common::tempdir();
    std::fs::create_dir_all(dir.path().join("de")).unwrap();
    for split in ["train", "validation", "test"] {
        write(&dir.path().join("de"), &format!("{split}.tsv"), b"Jeff\tB-PER\nDean\n");
    }
    let out = common::xner().args(["data", "stats", "--langs", "de", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "input errors exit with 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.tsv:2:") && !err.contains("panicked"), "{err}");
}
