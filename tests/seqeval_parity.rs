//! xner's metrics against seqeval 1.2 on every fixture written by scripts/seqeval_fixtures.py.

mod common;

use serde_json::Value;
use xner::metrics::{self, Mode, Report, Score};

fn check(name: &str, ours: &Score, theirs: &Value) {
    for (field, value) in [("precision", ours.precision), ("recall", ours.recall), ("f1-score", ours.f1)] {
        // null: seqeval's NaN (a mean over no entity type).
        match theirs[field].as_f64() {
            Some(expected) => {
                assert!((value - expected).abs() <= 1e-6, "{name} {field}: xner {value}, seqeval {expected}")
            }
            None => assert!(value.is_nan(), "{name} {field}: xner {value}, seqeval NaN"),
        }
    }
    assert_eq!(ours.support as u64, theirs["support"].as_u64().unwrap(), "{name} support");
}

fn check_report(case: &str, report: &Report, expected: &Value) {
    let expected = expected.as_object().unwrap();
    let types: Vec<&String> = expected.keys().filter(|k| !k.ends_with(" avg")).collect();
    let ours: Vec<&String> = report.per_type.keys().collect();
    assert_eq!(ours, types, "{case}: entity types");
    for (ty, score) in &report.per_type {
        check(&format!("{case}/{ty}"), score, &expected[ty]);
    }
    check(&format!("{case}/micro"), &report.micro, &expected["micro avg"]);
    check(&format!("{case}/macro"), &report.macro_avg, &expected["macro avg"]);
    check(&format!("{case}/weighted"), &report.weighted, &expected["weighted avg"]);
}

#[test]
fn every_fixture_agrees_with_seqeval_in_both_modes() {
    let dir = common::fixtures().join("seqeval");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected.as_object().unwrap();
    assert!(cases.len() >= 40, "fixtures missing: run scripts/seqeval_fixtures.py");
    for (case, want) in cases {
        let (gold, pred) = metrics::read_score_file(&dir.join(format!("{case}.txt"))).unwrap();
        for (mode, key, f1_key) in [(Mode::Default, "default", "f1_default"), (Mode::Strict, "strict", "f1_strict")] {
            let report = metrics::classification_report(&gold, &pred, mode).unwrap();
            check_report(&format!("{case}/{key}"), &report, &want[key]);
            let f1 = metrics::f1_score(&gold, &pred, mode).unwrap();
            assert!((f1 - want[f1_key].as_f64().unwrap()).abs() <= 1e-6, "{case} {f1_key}");
        }
    }
}

#[test]
fn score_command_prints_the_same_json() {
    let file = common::fixtures().join("seqeval/type_change_inside_span.txt");
    let out = common::xner().arg("score").arg(&file).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixtures().join("seqeval/expected.json")).unwrap())
            .unwrap();
    let want = &expected["type_change_inside_span"]["default"]["micro avg"]["f1-score"];
    assert!((printed["micro"]["f1"].as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn strict_mode_rejects_non_iob2_tags_with_the_file_named() {
    let dir = common::tempdir();
    let file = dir.path().join("bad.txt");
    std::fs::write(&file, "a B-PER E-PER\n").unwrap();
    let out = common::xner().args(["score", "--mode", "strict"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.txt") && err.contains("E-PER"), "{err}");
}
