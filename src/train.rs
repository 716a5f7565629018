//! Fine-tuning and evaluation, as the transformers Trainer does them by default: AdamW
//! (0.9, 0.999, 1e-8) with no decay on biases and LayerNorm weights, linear decay of the
//! learning rate to zero, gradient-norm clipping at 1.0, loss ignoring -100, a fresh seeded
//! shuffle each epoch, dynamic padding; entity F1 (seqeval) on the validation split after
//! each epoch.
//!
//! The loop reads like pseudo-code: batch → forward → loss → backward → clip → update → log.
//! Checkpoints (model, optimizer moments, trainer state) are written atomically; a resumed
//! run takes the same batches and dropout masks as an uninterrupted one, because both derive
//! from (seed, epoch) and (seed, step) alone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::align::{AlignedCorpus, AlignedSentence};
use crate::batch::{self, collate};
use crate::checkpoint::{self, NamedTensor};
use crate::data::LabelSet;
use crate::error::{Error, Result};
use crate::eval::{evaluate, progress};
use crate::model::{token_loss, Batch, DropoutRng, Kernels, TokenClassifier};
use crate::optim::{grad_norm, AdamW, AdamWConfig, Moments, SparseRows};
use crate::shuffle::Pcg64;
use crate::window::WindowOptions;

/// Hyperparameters of a run (the Trainer's defaults, the book's settings).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub max_grad_norm: f64,
    /// Length-grouped batches (transformers' `group_by_length`).
    pub group_by_length: bool,
    /// Also checkpoint every this many steps (0: at epoch ends only).
    pub save_steps: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 3,
            batch_size: 24,
            lr: 5e-5,
            weight_decay: 0.01,
            seed: 42,
            max_grad_norm: 1.0,
            group_by_length: true,
            save_steps: 0,
        }
    }
}

/// What a run keeps of its checkpoints (`checkpoint-N`: model, optimizer moments and state,
/// about three times the model's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Checkpoints {
    /// The newest, during and after the run (the Trainer's way: a finished run can be inspected
    /// or continued).
    #[default]
    Keep,
    /// The newest while training, removed once the final model is saved: an interrupted run
    /// resumes, a finished one holds only its model (what a series of runs wants).
    WhileTraining,
    /// None: an interrupted run starts over (the Trainer's `save_strategy="no"`).
    None,
}

/// Set when training should stop at the next step boundary (Ctrl-C, SIGTERM).
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every running `train` in this process to stop after its current step, saving a
/// checkpoint to resume from (unless the run keeps none), and returns whether a stop had been
/// asked already. It only swaps an atomic flag, so a signal handler may call it.
pub fn request_stop() -> bool {
    STOP_REQUESTED.swap(true, Ordering::SeqCst)
}

fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// One row of the book's training table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRow {
    pub epoch: usize,
    pub training_loss: f64,
    pub validation_loss: f64,
    pub f1: f64,
}

/// Where a run is; saved with every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub options: TrainOptions,
    pub train_rows: usize,
    pub total_steps: usize,
    pub global_step: usize,
    /// The epoch in progress (0-based) and how many of its batches are done.
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub epoch_loss_sum: f64,
    pub epoch_loss_steps: usize,
    pub rows: Vec<EpochRow>,
}

/// The batches of one epoch: a permutation seeded by (seed, epoch); with length grouping,
/// transformers' `get_length_grouped_indices` (mega-batches of up to 50 batches sorted by
/// length, the longest batch first).
pub fn epoch_batches(lengths: &[usize], batch_size: usize, seed: u64, epoch: usize, group: bool) -> Vec<Vec<usize>> {
    let mut rng = Pcg64::from_seed(((seed as u128) << 32) | epoch as u128);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    if group && !lengths.is_empty() {
        let mult = (lengths.len() / (batch_size * 4)).clamp(1, 50);
        let mut megas: Vec<Vec<usize>> = order.chunks(mult * batch_size).map(|c| c.to_vec()).collect();
        for m in &mut megas {
            m.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        }
        let longest = (0..megas.len()).max_by_key(|&k| (lengths[megas[k][0]], std::cmp::Reverse(k))).unwrap_or(0);
        let first = megas[0][0];
        megas[0][0] = megas[longest][0];
        megas[longest][0] = first;
        order = megas.concat();
    }
    order.chunks(batch_size).map(|c| c.to_vec()).collect()
}

fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64).wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// What one training step did, with the seconds of each phase.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    pub loss: f64,
    pub grad_norm: f64,
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
}

/// One update on a batch: forward in training mode and loss → backward (word-embedding rows
/// as a sparse gradient) → global-norm clipping → AdamW at `lr`. None when the batch has no
/// labelled position: there is nothing to learn and no update is made.
pub fn train_step(
    model: &TokenClassifier,
    opt: &mut AdamW,
    batch: &Batch,
    dropout: &mut DropoutRng,
    lr: f64,
    max_grad_norm: f64,
) -> Result<Option<StepOutcome>> {
    // A GPU runs ops asynchronously: wait for each phase, so that its time is its own (a no-op
    // on the CPU).
    let device = model.device();
    // Optimizer work that must come before the forward pass (timed with the optimizer).
    let decay_start = Instant::now();
    let word_index = model.word_embedding_index();
    if opt.has_pending_rows(word_index) {
        // The word rows this batch reads, with the weight decay they hold pending applied.
        opt.decay_pending_rows(&model.params, word_index, &batch.real_token_ids()?)?;
    }
    let decay_seconds = decay_start.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (logits, words) = model.forward_train(batch, Some(dropout))?;
    let Some(loss) = token_loss(&logits, &batch.labels)? else { return Ok(None) };
    device.synchronize()?;
    let t1 = Instant::now();
    let grads = loss.backward()?;
    device.synchronize()?;
    let t2 = Instant::now();
    let word_grad = words.sparse_grad(&grads)?;
    let sparse: Vec<(usize, &SparseRows)> = word_grad.iter().map(|g| (word_index, g)).collect();
    let norm = grad_norm(&model.params, &grads, &sparse)?;
    opt.step(&model.params, &grads, &sparse, lr, (max_grad_norm / (norm + 1e-6)).min(1.0))?;
    model.weights_changed();
    device.synchronize()?;
    let t3 = Instant::now();
    Ok(Some(StepOutcome {
        loss: loss.to_scalar::<f32>()? as f64,
        grad_norm: norm,
        forward: (t1 - t0).as_secs_f64(),
        backward: (t2 - t1).as_secs_f64(),
        optimizer: (t3 - t2).as_secs_f64() + decay_seconds,
    }))
}

/// Gives `opt` the update the model's ops call for: with the composed ops (other devices, or
/// `--composed` on the CPU), the AdamW over tensors those devices run.
pub fn match_optimizer(model: &TokenClassifier, opt: &mut AdamW) -> Result<()> {
    if model.kernels() == Kernels::Composed {
        opt.move_moments_beside(&model.params)?;
    }
    Ok(())
}

/// Everything a run needs besides its options.
pub struct Run<'a> {
    pub model: TokenClassifier,
    pub labels: LabelSet,
    pub train: &'a AlignedCorpus,
    pub validation: &'a AlignedCorpus,
    /// The window validation sentences are scored in (the training set is windowed already).
    pub window: WindowOptions,
    pub out: PathBuf,
    /// The tokenizer.json to copy into every checkpoint.
    pub tokenizer_json: PathBuf,
    pub show_progress: bool,
    /// Stop (as if killed) after this many steps of this process: for testing resume.
    pub halt_after_steps: Option<usize>,
    pub checkpoints: Checkpoints,
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Appends one JSON line to `metrics.jsonl` (append-only: nothing is lost on a crash).
fn log_metrics(out: &Path, value: serde_json::Value) -> Result<()> {
    let path = out.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    writeln!(f, "{value}").map_err(|e| Error::io(&path, e))
}

/// Saves model + tokenizer + optimizer + state as `out/checkpoint-<step>`, atomically (built
/// under a temporary name, then renamed), and removes older checkpoints.
fn save_checkpoint(run: &Run, opt: &mut AdamW, state: &TrainerState) -> Result<PathBuf> {
    opt.flush(&run.model.params)?;
    let final_dir = run.out.join(format!("checkpoint-{}", state.global_step));
    let tmp = run.out.join(format!(".checkpoint-{}.partial", state.global_step));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| {
        save_model_dir(&run.model, &run.tokenizer_json, &tmp)?;
        let mut moments = Vec::with_capacity(opt.moments.len() * 2);
        for ((name, var), param_moments) in run.model.params.iter().zip(&opt.moments) {
            let shape = var.dims().to_vec();
            let (m, v) = param_moments.to_host()?;
            moments.push(NamedTensor { name: format!("m.{name}"), shape: shape.clone(), data: m });
            moments.push(NamedTensor { name: format!("v.{name}"), shape, data: v });
        }
        checkpoint::write_safetensors(&tmp.join(OPTIMIZER_FILE), &moments)?;
        let mut state_json =
            serde_json::to_value(state).map_err(|e| Error::Json { context: STATE_FILE.into(), source: e })?;
        state_json["optimizer_step"] = serde_json::json!(opt.step);
        checkpoint::write_json(&tmp.join(STATE_FILE), &state_json)
    })();
    if written.is_err() {
        // A half-written checkpoint is of no use, and its space is often what ran out.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    // The rename itself reaches the disk with the directory that holds it.
    checkpoint::sync_dir(&run.out);
    for old in list_checkpoints(&run.out)? {
        if old != final_dir {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    Ok(final_dir)
}

/// The tokenizer files a model directory carries (transformers reads the class from the
/// config); the first is required.
const TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/// A Hugging Face model directory: config.json, model.safetensors and the tokenizer files
/// found beside `tokenizer_json`.
pub fn save_model_dir(model: &TokenClassifier, tokenizer_json: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    model.save(dir)?;
    let source_dir = tokenizer_json.parent().unwrap_or(Path::new("."));
    for (i, name) in TOKENIZER_FILES.iter().enumerate() {
        let source = if i == 0 { tokenizer_json.to_path_buf() } else { source_dir.join(name) };
        if i > 0 && !source.exists() {
            continue;
        }
        let bytes = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
        checkpoint::write_atomic(&dir.join(name), |w| w.write_all(&bytes))?;
    }
    Ok(())
}

/// `checkpoint-N` directories of a run, oldest first.
pub fn list_checkpoints(out: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(usize, PathBuf)> = vec![];
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(vec![]) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("checkpoint-").and_then(|s| s.parse::<usize>().ok()) {
            found.push((step, e.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The checkpoint to resume from: `path` itself, or the newest `checkpoint-N` inside it.
pub fn find_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    list_checkpoints(path)?
        .pop()
        .ok_or_else(|| Error::invalid(path, "no checkpoint to resume from (no checkpoint-N with trainer_state.json)"))
}

/// Whether a run can resume from `path` (a run directory or checkpoint) with `options`: its
/// newest checkpoint's state read and compared before any model is loaded.
pub fn check_resume(path: &Path, options: &TrainOptions) -> Result<()> {
    let dir = find_checkpoint(path)?;
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| Error::invalid(&state_path, format!("not a trainer state: {e}")))?;
    if &state.options != options {
        return Err(Error::Usage(format!(
            "{} was made with other options ({:?}); resume with the same flags (now {:?})",
            dir.display(),
            state.options,
            options
        )));
    }
    Ok(())
}

/// Restores optimizer moments and trainer state from a checkpoint directory.
pub fn load_training_state(dir: &Path, model: &TokenClassifier) -> Result<(AdamW, TrainerState)> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::invalid(&state_path, format!("invalid JSON: {e}")))?;
    let state: TrainerState = serde_json::from_value(value.clone())
        .map_err(|e| Error::invalid(&state_path, format!("not a trainer state: {e}")))?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let tensors = candle_core::safetensors::load(&opt_path, &Device::Cpu)
        .map_err(|e| Error::invalid(&opt_path, format!("cannot read optimizer state: {e}")))?;
    let mut moments = vec![];
    for (name, var) in &model.params {
        let get = |k: &str| -> Result<Vec<f32>> {
            let t = tensors.get(k).ok_or_else(|| Error::invalid(&opt_path, format!("missing {k}")))?;
            if t.dims() != var.dims() {
                return Err(Error::invalid(
                    &opt_path,
                    format!("{k} has shape {:?}, model has {:?}", t.dims(), var.dims()),
                ));
            }
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        // Host moments; the first step moves them beside parameters on another device.
        moments.push(Moments::Host { m: get(&format!("m.{name}"))?, v: get(&format!("v.{name}"))? });
    }
    let step = value["optimizer_step"].as_u64().unwrap_or(state.global_step as u64);
    let opt = AdamW::from_moments(
        AdamWConfig { weight_decay: state.options.weight_decay, ..AdamWConfig::default() },
        step,
        moments,
    );
    Ok((opt, state))
}

/// Trains; returns the epoch table. `resume` continues from a checkpoint's optimizer and
/// state (the model must have been loaded from the same checkpoint).
pub fn train(run: &mut Run, options: &TrainOptions, resume: Option<(AdamW, TrainerState)>) -> Result<Vec<EpochRow>> {
    std::fs::create_dir_all(&run.out).map_err(|e| Error::io(&run.out, e))?;
    if run.checkpoints == Checkpoints::None && options.save_steps > 0 {
        return Err(Error::Usage("--save-steps writes checkpoints; it cannot go with --checkpoints none".into()));
    }
    if run.show_progress {
        if let Some(warning) = disk_space_warning(&run.out, run.model.num_parameters(), run.checkpoints) {
            eprintln!("warning: {warning}");
        }
    }
    let device = run.model.device().clone();
    let lengths: Vec<usize> = run.train.sentences.iter().map(|s| s.len()).collect();
    let steps_per_epoch = lengths.len().div_ceil(options.batch_size);
    let total_steps = steps_per_epoch * options.epochs;
    if resume.is_none() {
        // A fresh start in a used directory: keep the old log beside, not mixed into, the new one.
        let log = run.out.join("metrics.jsonl");
        if log.exists() {
            let previous = run.out.join("metrics.previous.jsonl");
            std::fs::rename(&log, &previous).map_err(|e| Error::io(&previous, e))?;
        }
    }
    let (mut opt, mut state) = match resume {
        Some((opt, state)) => {
            if &state.options != options || state.train_rows != lengths.len() {
                return Err(Error::Usage(format!(
                    "the checkpoint was made with other options or data ({:?}, {} rows); resume with the same flags",
                    state.options, state.train_rows
                )));
            }
            (opt, state)
        }
        None => (
            AdamW::new(
                &run.model.params,
                AdamWConfig { weight_decay: options.weight_decay, ..AdamWConfig::default() },
            )?,
            TrainerState {
                options: options.clone(),
                train_rows: lengths.len(),
                total_steps,
                global_step: 0,
                epoch: 0,
                step_in_epoch: 0,
                epoch_loss_sum: 0.0,
                epoch_loss_steps: 0,
                rows: vec![],
            },
        ),
    };
    match_optimizer(&run.model, &mut opt)?;
    let mut steps_this_process = 0;
    while state.epoch < options.epochs {
        let batches = epoch_batches(&lengths, options.batch_size, options.seed, state.epoch, options.group_by_length);
        let bar = progress(batches.len(), &format!("epoch {}/{}", state.epoch + 1, options.epochs), run.show_progress);
        bar.set_position(state.step_in_epoch as u64);
        let epoch_start = Instant::now();
        let mut epoch_tokens = 0usize;
        for indices in batches.iter().skip(state.step_in_epoch) {
            let step_start = Instant::now();
            let sents: Vec<&AlignedSentence> = indices.iter().map(|&i| &run.train.sentences[i]).collect();
            let (real_tokens, padded) = batch::token_counts(&sents);
            let batch = collate(&run.model, &sents, &device)?;
            let mut dropout = DropoutRng::new(step_seed(options.seed, state.global_step));
            let lr = options.lr * (total_steps - state.global_step) as f64 / total_steps as f64;
            let mut logged = serde_json::json!({"step": state.global_step + 1, "epoch": state.epoch + 1, "lr": lr,
                "tokens": real_tokens, "padded_tokens": padded});
            if let Some(step) = train_step(&run.model, &mut opt, &batch, &mut dropout, lr, options.max_grad_norm)? {
                state.epoch_loss_sum += step.loss;
                state.epoch_loss_steps += 1;
                logged["loss"] = serde_json::json!(step.loss);
                logged["grad_norm"] = serde_json::json!(step.grad_norm);
                // Where the step's time went (the rest is batching and logging).
                logged["forward_seconds"] = serde_json::json!(step.forward);
                logged["backward_seconds"] = serde_json::json!(step.backward);
                logged["optimizer_seconds"] = serde_json::json!(step.optimizer);
            }
            state.global_step += 1;
            state.step_in_epoch += 1;
            steps_this_process += 1;
            epoch_tokens += real_tokens;
            let secs = step_start.elapsed().as_secs_f64();
            logged["seconds"] = serde_json::json!(secs);
            log_metrics(&run.out, logged)?;
            let mean = state.epoch_loss_sum / state.epoch_loss_steps.max(1) as f64;
            let rate = epoch_tokens as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {mean:.4} · {rate:.0} tok/s"));
            bar.inc(1);
            let last_of_epoch = state.step_in_epoch == batches.len();
            let mut saved = None;
            if options.save_steps > 0 && state.global_step % options.save_steps == 0 && !last_of_epoch {
                // (`save_steps` > 0 implies checkpoints: checked above.)
                saved = Some(save_checkpoint(run, &mut opt, &state)?);
            }
            if stop_requested() && !last_of_epoch {
                bar.abandon();
                let checkpoint = match saved {
                    None if run.checkpoints != Checkpoints::None => Some(save_checkpoint(run, &mut opt, &state)?),
                    saved => saved,
                };
                return Err(Error::Interrupted { step: state.global_step, checkpoint });
            }
            if run.halt_after_steps == Some(steps_this_process) && !last_of_epoch {
                bar.abandon();
                return Err(Error::Usage(format!("halted after {steps_this_process} steps (--halt-after-steps)")));
            }
        }
        bar.finish_and_clear();
        opt.flush(&run.model.params)?;
        let eval =
            evaluate(&run.model, run.validation, &run.labels, run.window, options.batch_size, run.show_progress)?;
        let row = EpochRow {
            epoch: state.epoch + 1,
            training_loss: state.epoch_loss_sum / state.epoch_loss_steps.max(1) as f64,
            validation_loss: eval.loss,
            f1: eval.f1(),
        };
        log_metrics(
            &run.out,
            serde_json::json!({"epoch_end": row.epoch, "training_loss": row.training_loss,
            "validation_loss": row.validation_loss, "f1": row.f1, "epoch_seconds": epoch_start.elapsed().as_secs_f64()}),
        )?;
        if run.show_progress {
            if state.rows.is_empty() {
                eprintln!("{}", epoch_table_header());
            }
            eprintln!("{}", epoch_table_row(&row));
        }
        state.rows.push(row);
        state.epoch += 1;
        state.step_in_epoch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_loss_steps = 0;
        let saved = match run.checkpoints {
            Checkpoints::None => None,
            _ => Some(save_checkpoint(run, &mut opt, &state)?),
        };
        if stop_requested() && state.epoch < options.epochs {
            return Err(Error::Interrupted { step: state.global_step, checkpoint: saved });
        }
        if run.halt_after_steps == Some(steps_this_process) && state.epoch < options.epochs {
            return Err(Error::Usage(format!("halted after {steps_this_process} steps (--halt-after-steps)")));
        }
    }
    opt.flush(&run.model.params)?;
    save_model_dir(&run.model, &run.tokenizer_json, &run.out)?;
    if run.checkpoints == Checkpoints::WhileTraining {
        for dir in list_checkpoints(&run.out)? {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
    }
    Ok(state.rows)
}

/// Says so when `out`'s file system has less room than the run will write: the final model
/// (4 bytes a parameter) and, while one checkpoint replaces the last, two checkpoints (12 bytes
/// a parameter each: weights and Adam's two moments). A full disk otherwise shows up only
/// when the first checkpoint is written, an epoch into the run.
pub fn disk_space_warning(out: &Path, parameters: usize, checkpoints: Checkpoints) -> Option<String> {
    let free = checkpoint::free_bytes(out)?;
    let model = 4 * parameters as u64;
    let needed = match checkpoints {
        Checkpoints::None => model,
        Checkpoints::Keep | Checkpoints::WhileTraining => model + 2 * 3 * model,
    };
    let gb = |b: u64| b as f64 / 1e9;
    (free < needed).then(|| {
        let advice = if checkpoints == Checkpoints::None {
            String::new()
        } else {
            format!("; `--checkpoints none` needs only {:.1} GB (but a crash loses the run)", gb(model))
        };
        format!(
            "{} has {:.1} GB free, and this run writes up to {:.1} GB (final model and checkpoints){advice}",
            out.display(),
            gb(free),
            gb(needed)
        )
    })
}

pub fn epoch_table_header() -> String {
    format!("{:>5}  {:>13}  {:>15}  {:>8}", "Epoch", "Training Loss", "Validation Loss", "F1")
}

pub fn epoch_table_row(r: &EpochRow) -> String {
    format!("{:>5}  {:>13.4}  {:>15.4}  {:>8.4}", r.epoch, r.training_loss, r.validation_loss, r.f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_larger_than_the_free_disk_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let free = checkpoint::free_bytes(dir.path()).expect("statvfs on a temporary directory");
        // Parameters whose final model alone (4 bytes each) is twice the free space (which other
        // tests change meanwhile).
        let too_many = (free / 2) as usize;
        let warning = disk_space_warning(dir.path(), too_many, Checkpoints::Keep).unwrap();
        assert!(warning.contains(&dir.path().display().to_string()) && warning.contains("--checkpoints none"));
        let warning = disk_space_warning(dir.path(), too_many, Checkpoints::None).unwrap();
        assert!(!warning.contains("--checkpoints none"), "{warning}");
        // Checkpoints count: a model that fits alone but not with two checkpoints (3× its size).
        let fits_alone = (free / 4 / 2) as usize;
        assert!(disk_space_warning(dir.path(), fits_alone, Checkpoints::None).is_none());
        assert!(disk_space_warning(dir.path(), fits_alone, Checkpoints::WhileTraining).is_some());
        assert!(disk_space_warning(dir.path(), 1000, Checkpoints::Keep).is_none());
    }

    #[test]
    fn grouped_batches_cover_every_row_once_and_cut_padding() {
        let lengths: Vec<usize> = (0..1000).map(|i| 5 + (i * 37) % 60).collect();
        for group in [false, true] {
            let batches = epoch_batches(&lengths, 24, 42, 0, group);
            let mut all: Vec<usize> = batches.concat();
            all.sort_unstable();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
        }
        let padded = |bs: &Vec<Vec<usize>>| -> usize {
            bs.iter().map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len()).sum()
        };
        let random = padded(&epoch_batches(&lengths, 24, 42, 0, false));
        let grouped = padded(&epoch_batches(&lengths, 24, 42, 0, true));
        assert!(grouped * 10 < random * 8, "grouping must cut padding: {grouped} vs {random}");
        // The first batch holds the longest sentence (transformers puts it first).
        let first = &epoch_batches(&lengths, 24, 42, 0, true)[0];
        assert_eq!(first.iter().map(|&i| lengths[i]).max(), lengths.iter().copied().max());
        // Seeded: same (seed, epoch) → same order; another epoch → another order.
        assert_eq!(epoch_batches(&lengths, 24, 42, 1, true), epoch_batches(&lengths, 24, 42, 1, true));
        assert_ne!(epoch_batches(&lengths, 24, 42, 1, true), epoch_batches(&lengths, 24, 42, 2, true));
    }
}
