//! The user's own corpus: column files (CoNLL-2003 style, IOB1, extra columns, -DOCSTART-),
//! JSON Lines with integer tags, Parquet written by `datasets`; schemes read into IOB2; label
//! sets from the data; transformers' alignment; long sentences and documents windowed, every
//! word scored once; malformed input as one line naming file and line, exit code 2.

mod common;

use std::path::{Path, PathBuf};

use xner::align::Aligner;
use xner::data::{read_corpus, read_corpus_with_report, LabelSet, ReadOptions, Scheme};

fn fixture(name: &str) -> PathBuf {
    common::fixtures().join("corpus").join(name)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run_xner(args: &[&str]) -> std::process::Output {
    common::xner().args(args).env("XNER_DATA", common::panx_dir()).output().unwrap()
}

fn run_xner_ok(args: &[&str]) -> std::process::Output {
    let out = run_xner(args);
    assert!(out.status.success(), "xner {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn read(path: &Path) -> xner::data::Corpus {
    read_corpus(path, &ReadOptions::default()).unwrap()
}

fn config_labels(model_dir: &Path) -> Vec<String> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json")).unwrap()).unwrap();
    let n = config["id2label"].as_object().unwrap().len();
    for i in 0..n {
        let name = config["id2label"][i.to_string()].as_str().unwrap();
        assert_eq!(config["label2id"][name].as_u64(), Some(i as u64), "label2id is id2label's inverse");
    }
    (0..n).map(|i| config["id2label"][i.to_string()].as_str().unwrap().to_string()).collect()
}

/// What transformers' `AutoConfig` read from the configs of models these tests train
/// (scripts/hf_read_labels.py).
fn transformers_labels(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture("hf_labels.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[name]["labels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn parquet_written_by_datasets_reads_like_its_jsonl_twin_in_classlabel_order() {
    let parquet = read(&fixture("made_up.parquet"));
    let jsonl = read(&fixture("made_up.jsonl"));
    // The ClassLabel names in the file's metadata are the label set, in their order.
    let alignment: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("alignment.json")).unwrap()).unwrap();
    let class_labels: Vec<&str> = alignment["labels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(parquet.labels.names(), class_labels);
    // String tags: O, then B-/I- of each type alphabetically.
    assert_eq!(jsonl.labels.names(), ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]);
    assert_eq!(parquet.len(), 48);
    for (a, b) in parquet.sentences.iter().zip(&jsonl.sentences) {
        assert_eq!(a.words, b.words);
        assert_eq!(parquet.tags(a), jsonl.tags(b));
    }
}

#[test]
fn alignment_matches_transformers_word_ids_in_both_modes() {
    let corpus = read(&fixture("made_up.parquet"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("alignment.json")).unwrap()).unwrap();
    let tokenizer = common::xlmr_tokenizer_json();
    let first = Aligner::from_file(&tokenizer).unwrap().align_corpus(&corpus).unwrap();
    let all = Aligner::from_file(&tokenizer).unwrap().label_all_subwords(&corpus.labels).align_corpus(&corpus).unwrap();
    let ints =
        |v: &serde_json::Value| -> Vec<i64> { v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect() };
    let mut continuation_labelled = 0;
    for (i, want) in expected["sentences"].as_array().unwrap().iter().enumerate() {
        let (a, b) = (&first.sentences[i], &all.sentences[i]);
        let ids: Vec<i64> = a.input_ids.iter().map(|&x| x as i64).collect();
        assert_eq!(ids, ints(&want["input_ids"]), "sentence {i}");
        let word_ids: Vec<Option<u64>> = want["word_ids"].as_array().unwrap().iter().map(|w| w.as_u64()).collect();
        assert_eq!(a.word_ids.iter().map(|w| w.map(u64::from)).collect::<Vec<_>>(), word_ids, "sentence {i}");
        assert_eq!(a.label_ids, ints(&want["first_subword"]), "sentence {i}");
        assert_eq!(b.label_ids, ints(&want["all_subwords"]), "sentence {i}");
        continuation_labelled += b.label_ids.iter().zip(&a.label_ids).filter(|(x, y)| x != y).count();
    }
    assert!(continuation_labelled > 20, "the fixture exercises label_all_tokens ({continuation_labelled})");
}

#[test]
fn iob1_bioes_and_iob2_files_give_the_same_entities() {
    let dir = common::tempdir();
    // One corpus written by hand in three schemes.
    let words = ["Jeff", "Dean", "works", "at", "Google", "in", "New", "York", "", "Paris", "Berlin", "and", "Rome"];
    let iob2 = "B-PER I-PER O O B-ORG O B-LOC I-LOC - B-LOC B-LOC O B-LOC";
    let iob1 = "I-PER I-PER O O I-ORG O I-LOC I-LOC - I-LOC B-LOC O I-LOC";
    let bioes = "B-PER E-PER O O S-ORG O B-LOC E-LOC - S-LOC S-LOC O S-LOC";
    let write = |name: &str, tags: &str| {
        let text: String = words
            .iter()
            .zip(tags.split(' '))
            .map(|(w, t)| if w.is_empty() { "\n".to_string() } else { format!("{w} X {t}\n") })
            .collect();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let files = [write("a.iob2", iob2), write("a.iob1", iob1), write("a.bioes", bioes)];
    let read = |p: &Path| read_corpus_with_report(p, &ReadOptions::default()).unwrap();
    let (reference, report) = read(&files[0]);
    assert_eq!(report.scheme, Scheme::Iob2);
    for (file, scheme) in [(&files[1], Scheme::Iob1), (&files[2], Scheme::Bioes)] {
        let (corpus, report) = read(file);
        assert_eq!((report.scheme, report.scheme_detected, report.violations), (scheme, true, 0));
        assert_eq!(corpus.labels, reference.labels);
        assert_eq!(corpus.sentences, reference.sentences, "{}", file.display());
    }
    // A scheme given that the tags do not fit is an error at the first misfit.
    let wrong = ReadOptions { scheme: Some(Scheme::Iob2), ..Default::default() };
    let err = read_corpus(&files[2], &wrong).unwrap_err().to_string();
    assert!(err.contains("a.bioes:2:") && err.contains("E-PER") && err.contains("IOB2"), "{err}");
    // Ill-formed IOB2 is counted and located, not repaired.
    let bad = write("bad.iob2", "O I-PER O O B-ORG O B-LOC I-LOC - B-LOC I-ORG O B-LOC");
    let (corpus, report) = read(&bad);
    assert_eq!(report.violations, 2);
    assert!(report
        .first_violation
        .as_deref()
        .unwrap()
        .ends_with("bad.iob2:2: I-PER does not continue a PER entity (after O or the start)"));
    assert_eq!(corpus.tags(&corpus.sentences[0])[1], "I-PER");
    // --strict-data: that warning is an error, with the count and the first place.
    let strict = ReadOptions { strict: true, ..Default::default() };
    let err = read_corpus(&bad, &strict).unwrap_err().to_string();
    assert!(
        err.contains("2 tags break IOB2's rules (--strict-data), first at") && err.contains("bad.iob2:2:"),
        "{err}"
    );
    // A labels.json that names a label twice is an error.
    std::fs::write(dir.path().join("labels.json"), r#"["O", "B-PER", "B-PER"]"#).unwrap();
    let jsonl = dir.path().join("ints.jsonl");
    std::fs::write(&jsonl, r#"{"tokens": ["Ada"], "ner_tags": [1]}"#).unwrap();
    let err = read_corpus(&jsonl, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("labels.json: B-PER is named twice"), "{err}");
}

#[test]
fn unknown_validation_labels_are_errors_or_read_as_o() {
    let dir = common::tempdir();
    let train = dir.path().join("train.conll");
    std::fs::write(&train, "Jeff B-PER\nDean I-PER\n\nsaid O\n").unwrap();
    let validation = dir.path().join("validation.conll");
    std::fs::write(&validation, "Ada B-PER\n\nin O\nRome B-LOC\n").unwrap();
    let labels = read(&train).labels;
    assert_eq!(labels.names(), ["O", "B-PER", "I-PER"]);
    let fixed = ReadOptions { labels: Some(labels.clone()), ..Default::default() };
    let err = read_corpus(&validation, &fixed).unwrap_err().to_string();
    assert!(err.contains("validation.conll:4:") && err.contains("B-LOC"), "{err}");
    let as_o = ReadOptions { unknown: xner::data::UnknownLabels::AsO, ..fixed };
    let (corpus, report) = read_corpus_with_report(&validation, &as_o).unwrap();
    assert_eq!((report.unknown_as_o, report.unknown_labels.clone()), (1, vec!["B-LOC".to_string()]));
    assert_eq!(corpus.sentences[1].label_ids, [0, 0]);
    // The command line stops before loading any model, naming file, line and label.
    let out = run_xner(&[
        "train",
        "--model",
        "no-such-model",
        "--train",
        path(&train),
        "--validation",
        path(&validation),
        "--out",
        path(&dir.path().join("out")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("validation.conll:4:") && err.contains("B-LOC") && !err.contains("panicked"), "{err}");
    // --labels gives the label set exactly; a duplicate or a non-tag there is a usage error.
    let fixed_labels = ReadOptions {
        labels: Some(LabelSet::new(vec!["O".into(), "B-PER".into(), "I-PER".into(), "B-LOC".into(), "I-LOC".into()])),
        ..Default::default()
    };
    assert_eq!(read_corpus(&validation, &fixed_labels).unwrap().labels.len(), 5);
    assert!(LabelSet::from_names(vec!["O".into(), "B-PER".into(), "B-PER".into()], "--labels").is_err());
    assert!(LabelSet::from_names(vec!["O".into(), "NNP".into()], "--labels").is_err());
}

/// A CoNLL-2003-like corpus from PAN-X sentences: `word POS chunk tag` columns, IOB1 tags,
/// `-DOCSTART-` every 16 sentences, and a fourth type (MISC: the LOC entities of every third
/// sentence). Returns the file's word count.
fn write_conll2003_like(path: &Path, lang: &str, split: &str, n: usize) -> usize {
    let panx = xner::data::PanxDir::new(common::panx_dir());
    let corpus = xner::data::load_languages(&panx, &[lang.to_string()], split, 0, Some(n)).unwrap();
    let mut text = String::new();
    let mut words = 0;
    for (i, s) in corpus.sentences.iter().enumerate() {
        if i % 16 == 0 {
            text += "-DOCSTART- -X- -X- O\n\n";
        }
        let mut tags = corpus.tags(s);
        if i % 3 == 0 {
            tags = tags.into_iter().map(|t| t.replace("LOC", "MISC")).collect();
        }
        // IOB2 → IOB1 by hand: B- only where an entity follows one of its type.
        let mut prev = "O".to_string();
        for (w, t) in s.words.iter().zip(&tags) {
            let iob1 = match t.split_once('-') {
                Some(("B", ty)) if prev.ends_with(&format!("-{ty}")) => t.clone(),
                Some((_, ty)) => format!("I-{ty}"),
                None => t.clone(),
            };
            text += &format!("{} NN I-NP {iob1}\n", w.replace(' ', "_"));
            prev = t.clone();
            words += 1;
        }
        text += "\n";
    }
    std::fs::write(path, text).unwrap();
    words
}

#[test]
fn a_conll2003_like_corpus_trains_and_every_word_is_scored() {
    let tmp = common::tempdir();
    let model = common::tiny_xlmr(&tmp.path().join("tiny"));
    let train = tmp.path().join("train.conll");
    let validation = tmp.path().join("validation.conll");
    write_conll2003_like(&train, "de", "train", 96);
    let words = write_conll2003_like(&validation, "de", "validation", 40);
    let out_dir = tmp.path().join("run");
    // A window of 24 tokens: many sentences are longer and run as overlapping windows.
    let window = ["--max-length", "24", "--stride", "6"];
    let out = run_xner_ok(
        &[
            &["train", "--model", path(&model), "--train", path(&train), "--validation", path(&validation)][..],
            &["--test", path(&validation), "--epochs", "1", "--batch-size", "8", "--lr", "1e-3"],
            &["--checkpoints", "none", "--out", path(&out_dir)],
            &window,
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IOB1 tags (detected"), "{err}");
    assert!(err.contains("windows (stride 6)"), "{err}");
    let labels = config_labels(&out_dir);
    assert_eq!(labels, ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]);
    assert_eq!(labels, transformers_labels("conll2003_like"));
    assert!(out_dir.join("test_results.json").exists());

    let out = run_xner_ok(
        &[&["eval", "--model", path(&out_dir), "--file", path(&validation), "--json"][..], &window].concat(),
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &results[path(&validation)];
    assert_eq!(r["words_scored"].as_u64(), Some(words as u64), "every word of the file is scored once");
    assert!(r["f1"].as_f64().is_some() && r["strict_f1"].as_f64().is_some());
}

#[test]
fn parquet_and_integer_jsonl_corpora_train_with_their_label_lists() {
    let tmp = common::tempdir();
    let model = common::tiny_xlmr(&tmp.path().join("tiny"));
    let parquet = fixture("made_up.parquet");
    let parquet_run = tmp.path().join("parquet-run");
    let quick = ["--epochs", "1", "--batch-size", "8", "--checkpoints", "none"];
    run_xner_ok(
        &[
            &["train", "--model", path(&model), "--train", path(&parquet), "--validation", path(&parquet)][..],
            &quick,
            &["--out", path(&parquet_run)],
        ]
        .concat(),
    );
    assert_eq!(config_labels(&parquet_run), transformers_labels("made_up_parquet"));
    assert_eq!(config_labels(&parquet_run), read(&parquet).labels.names());

    // JSON Lines with integer tags named by a labels.json beside it.
    let dir = tmp.path().join("jsonl");
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["O", "B-PER", "I-PER", "B-WORK", "I-WORK"];
    std::fs::write(dir.join("labels.json"), serde_json::to_string(&names).unwrap()).unwrap();
    let lines = [
        r#"{"tokens": ["Ada", "Lovelace", "wrote", "Notes"], "ner_tags": [1, 2, 0, 3]}"#,
        r#"{"tokens": ["Jeff", "read", "The", "Art"], "ner_tags": [1, 0, 3, 4]}"#,
    ];
    let file = dir.join("train.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let jsonl_run = tmp.path().join("jsonl-run");
    run_xner_ok(
        &[
            &["train", "--model", path(&model), "--train", path(&file), "--validation", path(&file)][..],
            &quick,
            &["--out", path(&jsonl_run)],
        ]
        .concat(),
    );
    assert_eq!(config_labels(&jsonl_run), names);
}

#[test]
fn a_20000_word_document_is_tagged_whole_with_offsets_into_it() {
    let tmp = common::tempdir();
    let tiny = common::tiny_xlmr(&tmp.path().join("tiny"));
    // A random head: entities everywhere, which is what an offsets check wants.
    let labels = LabelSet::panx();
    let model = xner::model::TokenClassifier::load(&tiny, Some(labels.names()), 7, &candle_core::Device::Cpu).unwrap();
    let model_dir = tmp.path().join("tagger");
    xner::train::save_model_dir(&model, &tiny.join("tokenizer.json"), &model_dir).unwrap();

    let panx = xner::data::PanxDir::new(common::panx_dir());
    let corpus = xner::data::load_languages(&panx, &["de".to_string()], "test", 0, None).unwrap();
    let mut document = String::new();
    let mut words = 0;
    for s in &corpus.sentences {
        if words >= 20_000 {
            break;
        }
        document += &s.words.join(" ");
        document += if words % 7 == 0 { "\n" } else { " " };
        words += s.words.len();
    }
    let doc_path = tmp.path().join("document.txt");
    std::fs::write(&doc_path, &document).unwrap();
    let out = run_xner_ok(&["tag", "--model", path(&model_dir), "--document", path(&doc_path), "--json"]);
    let tagged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chars: Vec<char> = document.chars().collect();
    let entities = tagged["entities"].as_array().unwrap();
    assert!(tagged["tokens"].as_array().unwrap().len() > 20_000, "the whole document was tokenized");
    assert!(entities.len() > 100);
    let mut last_end = 0;
    for e in entities {
        let (start, end) = (e["start"].as_u64().unwrap() as usize, e["end"].as_u64().unwrap() as usize);
        let text: String = chars[start..end].iter().collect();
        assert_eq!(text, e["text"].as_str().unwrap(), "offsets point at the entity's text");
        last_end = last_end.max(end);
    }
    assert!(last_end > chars.len() * 9 / 10, "entities found up to the end ({last_end} of {})", chars.len());
}

#[test]
fn malformed_input_is_one_line_naming_file_and_line_with_exit_code_2() {
    let dir = common::tempdir();
    let cases: Vec<(&str, &[u8], &[&str], &str)> = vec![
        ("one_column.conll", b"Jeff B-PER\nDean\n", &[], "one_column.conll:2: missing tag column"),
        (
            "pos_as_tag.conll",
            b"Jeff NNP I-NP B-PER\n",
            &["--tag-column", "2"],
            "pos_as_tag.conll:1: column 2 holds \"NNP\", not a tag",
        ),
        (
            "columns.conll",
            b"Jeff NNP B-PER\nDean B-PER\n",
            &[],
            "columns.conll:2: 2 columns where the file's first token line has 3",
        ),
        ("no_tokens.jsonl", b"{\"ner_tags\": [\"O\"]}\n", &[], "no_tokens.jsonl:1: missing array field \"tokens\""),
        (
            "ragged.jsonl",
            b"{\"tokens\": [\"a\", \"b\"], \"ner_tags\": [\"O\"]}\n",
            &[],
            "ragged.jsonl:1: 2 tokens but 1 ner_tags",
        ),
        ("not_json.jsonl", b"{\"tokens\": [\n", &[], "not_json.jsonl:1: invalid JSON"),
        ("empty.conll", b"", &[], "empty.conll: empty file"),
        ("garbage.parquet", b"PAR1 not really", &[], "garbage.parquet: not a readable Parquet file"),
    ];
    let mut files: Vec<(PathBuf, Vec<&str>, String)> = cases
        .into_iter()
        .map(|(name, bytes, flags, want)| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            (p, flags.to_vec(), want.to_string())
        })
        .collect();
    files.push((fixture("no_ner_tags.parquet"), vec![], "no_ner_tags.parquet: no \"ner_tags\" column".into()));
    files.push((fixture("ragged.parquet"), vec![], "ragged.parquet:2: 3 tokens but 2 ner_tags".into()));
    let out_dir = dir.path().join("out");
    for (file, flags, want) in &files {
        let stats: Vec<&str> = [&["data", "stats", path(file)][..], flags].concat();
        let train: Vec<&str> =
            [&["train", "--model", "never-loaded", "--train", path(file), "--validation", path(file)][..], flags]
                .concat();
        for args in [stats, [&train[..], &["--out", path(&out_dir)]].concat()] {
            let out = run_xner(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains(want.as_str()) && !err.contains("panicked"), "{args:?}: wanted {want:?}, got {err}");
        }
    }
}
