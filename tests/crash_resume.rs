//! Crash-anywhere training: `xner train` killed with SIGKILL at random moments (in a step, in a
//! checkpoint's writing, between its files), several times in a row, and resumed each time: it
//! always resumes from the newest complete checkpoint (checkpoints are built under a temporary
//! name, fsynced and renamed), and ends with the weights of an uninterrupted run. Also: a resume
//! with other options is refused before any model is loaded; the exit codes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 96 sentences, batches of 8: 12 steps an epoch, two epochs, a checkpoint every 2 steps.
fn training<'a>(model: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        path(model),
        "--max-train-samples",
        "96",
        "--max-eval-samples",
        "16",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--epochs",
        "2",
        "--save-steps",
        "2",
        "--checkpoints",
        "keep",
        "--out",
        path(out),
    ]
}

/// The last step a run has logged in its metrics.jsonl (0 before any).
fn logged_step(out: &Path) -> usize {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|row| row["step"].as_u64())
        .max()
        .unwrap_or(0) as usize
}

/// The newest complete `checkpoint-N` of a run and its step.
fn newest_checkpoint(out: &Path) -> Option<(usize, std::path::PathBuf)> {
    let mut found: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_prefix("checkpoint-").and_then(|n| n.parse().ok()).map(|n| (n, e.path()))
        })
        .collect();
    found.sort();
    found.pop()
}

#[test]
fn killed_anywhere_and_resumed_it_ends_like_an_uninterrupted_run() {
    let tmp = common::tempdir();
    let model = common::tiny_xlmr(&tmp.path().join("tiny"));
    let whole = tmp.path().join("whole");
    let out = common::xner().args(training(&model, &whole)).env("XNER_DATA", common::panx_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A fixed sequence of kill points (xorshift from a fixed seed), spread over the run: each
    // a step to reach, then a few milliseconds more, so that the kill lands in a step, in a
    // checkpoint's writing or between its files. (Kill times in fixed milliseconds all fell
    // before the first checkpoint on a loaded machine.)
    let crashed = tmp.path().join("crashed");
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut kills = 0;
    let mut last_step = 0;
    let mut resumes = 0;
    for _ in 0..6 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let kill_at_step = logged_step(&crashed) + 1 + (state % 5) as usize;
        let extra = Duration::from_millis((state >> 8) % 40);
        let mut args = training(&model, &crashed);
        if crashed.exists() && newest_checkpoint(&crashed).is_some() {
            args.extend(["--resume", path(&crashed)]);
            resumes += 1;
        }
        let mut child = common::xner()
            .args(&args)
            .env("XNER_DATA", common::panx_dir())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut reached: Option<Instant> = None;
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if reached.is_none() && logged_step(&crashed) >= kill_at_step {
                reached = Some(Instant::now());
            }
            if reached.is_some_and(|at| at.elapsed() >= extra) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if finished {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            break;
        }
        child.kill().unwrap(); // SIGKILL: no handler runs, nothing is flushed
        child.wait().unwrap();
        kills += 1;
        // Whatever was being written, the newest checkpoint is whole and never older than before.
        if let Some((step, dir)) = newest_checkpoint(&crashed) {
            for file in
                ["model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json", "tokenizer.json"]
            {
                assert!(dir.join(file).exists(), "{} lacks {file}", dir.display());
            }
            let state: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("trainer_state.json")).unwrap()).unwrap();
            assert_eq!(state["global_step"].as_u64(), Some(step as u64));
            assert!(step >= last_step, "checkpoint {step} after {last_step}");
            last_step = step;
        }
    }
    if !crashed.join("model.safetensors").exists() {
        assert!(newest_checkpoint(&crashed).is_some(), "killed {kills} times, never after a checkpoint");
        let out = common::xner()
            .args(training(&model, &crashed))
            .args(["--resume", path(&crashed)])
            .env("XNER_DATA", common::panx_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        resumes += 1;
    }
    assert!(kills >= 2, "the run was killed along the way ({kills} times)");
    assert!(resumes >= 1, "no run resumed from a checkpoint");
    let a = std::fs::read(whole.join("model.safetensors")).unwrap();
    let b = std::fs::read(crashed.join("model.safetensors")).unwrap();
    assert!(a == b, "the resumed run's weights differ from the uninterrupted run's");
}

#[test]
fn a_resume_with_other_options_is_refused_before_loading_and_exit_codes_say_why() {
    let tmp = common::tempdir();
    let model = common::tiny_xlmr(&tmp.path().join("tiny"));
    let run = tmp.path().join("run");
    let mut args = training(&model, &run);
    args.extend(["--halt-after-steps", "3"]);
    let out = common::xner().args(&args).env("XNER_DATA", common::panx_dir()).output().unwrap();
    assert!(!out.status.success());
    assert!(newest_checkpoint(&run).is_some());
    // Another learning rate: a usage error (2), said before the model is read.
    let mut args = training(Path::new("/no/such/model"), &run);
    let lr = args.iter().position(|a| *a == "--lr").unwrap();
    args[lr + 1] = "5e-3";
    args.extend(["--resume", path(&run)]);
    let out = common::xner().args(&args).env("XNER_DATA", common::panx_dir()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("other options") && !err.contains("/no/such/model"), "{err}");
    // A failure that is no input error (the output lies under a regular file): 1.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = common::xner()
        .args(training(&model, &blocker.join("out")))
        .env("XNER_DATA", common::panx_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    // Usage errors from the parser: 2; success: 0.
    assert_eq!(common::xner().args(["train", "--epochs", "0"]).output().unwrap().status.code(), Some(2));
    assert_eq!(common::xner().args(["--version"]).output().unwrap().status.code(), Some(0));
}
