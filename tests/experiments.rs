//! The experiment commands on tens of sentences and one epoch: shapes and consistency of their
//! outputs (table cells equal `xner eval` on the same checkpoints, runs are reused).

mod common;

use std::path::Path;

use serde_json::Value;

fn xner(args: &[&str]) -> String {
    let out = common::xner().args(args).env("XNER_DATA", common::panx_dir()).output().unwrap();
    assert!(out.status.success(), "xner {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn eval_f1(model: &str, lang: &str) -> f64 {
    let out = xner(&["eval", "--model", model, "--langs", lang, "--split", "test", "--max-samples", "12", "--json"]);
    serde_json::from_str::<Value>(&out).unwrap()[lang]["f1"].as_f64().unwrap()
}

#[test]
fn transfer_curve_table_and_report() {
    let tmp = common::tempdir();
    let model = common::tiny_xlmr(&tmp.path().join("tiny"));
    let model = model.to_str().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let small = [
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "8",
        "--max-test-samples",
        "12",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
    ];

    let out = p("transfer");
    xner(&[&["transfer", "--model", model, "--langs", "de,fr", "--out", &out][..], &small[..]].concat());
    let t = json(&tmp.path().join("transfer/transfer.json"));
    let model_dir = t["model"].as_str().unwrap().to_string();
    for lang in ["de", "fr"] {
        assert_eq!(t["f1"][lang].as_f64().unwrap(), eval_f1(&model_dir, lang), "transfer {lang}");
    }

    let out = p("curve");
    xner(
        &[
            &[
                "curve",
                "--model",
                model,
                "--target",
                "fr",
                "--sizes",
                "8,16",
                "--zero-shot-from",
                &model_dir,
                "--out",
                &out,
            ][..],
            &small[..],
        ]
        .concat(),
    );
    let c = json(&tmp.path().join("curve/curve.json"));
    let points = c["points"].as_array().unwrap();
    assert_eq!(points.iter().map(|p| p["samples"].as_u64().unwrap()).collect::<Vec<_>>(), [8, 16]);
    assert_eq!(c["zero_shot"].as_f64().unwrap(), t["f1"]["fr"].as_f64().unwrap());
    assert_eq!(points[0]["f1"].as_f64().unwrap(), eval_f1(&p("curve/fr-8"), "fr"));
    assert!(std::fs::read_to_string(tmp.path().join("curve/curve.svg")).unwrap().contains("<polyline"));

    let out = p("table");
    let printed = xner(&[&["table", "--model", model, "--langs", "de,fr", "--out", &out][..], &small[..]].concat());
    assert!(printed.contains("| each |") && printed.contains("| all |"), "{printed}");
    let table = json(&tmp.path().join("table/table.json"));
    for (row, cells) in table["rows"].as_object().unwrap() {
        for (lang, f1) in cells.as_object().unwrap() {
            let model = table["models"][row][lang].as_str().unwrap();
            assert_eq!(f1.as_f64().unwrap(), eval_f1(model, lang), "table {row}/{lang}");
        }
    }
    assert_eq!(table["rows"].as_object().unwrap().len(), 3);
    // A second call finds every run and gives the same table without training.
    let again = xner(&[&["table", "--model", model, "--langs", "de,fr", "--out", &out][..], &small[..]].concat());
    assert_eq!(printed, again);

    // The analysis joins the report too.
    xner(&["analyze", "--model", &model_dir, "--max-samples", "10", "--out", &p("analysis")]);
    let report_path = xner(&["report", tmp.path().to_str().unwrap()]);
    let report = std::fs::read_to_string(report_path.trim()).unwrap();
    for needle in [
        "Test F1 by training language",
        "Zero-shot transfer from de",
        "F1 on fr against training samples",
        "curve.svg",
        "Error analysis",
        "confusion.svg",
    ] {
        assert!(report.contains(needle), "report lacks {needle}:\n{report}");
    }
}

#[test]
fn report_of_an_empty_directory_is_an_error() {
    let tmp = common::tempdir();
    let out = common::xner().arg("report").arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no experiment outputs"));
}
