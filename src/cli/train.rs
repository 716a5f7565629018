//! `xner train`: fine-tuning on PAN-X (the book's Swiss corpus) or on the user's own corpus
//! files (`--train`, `--validation`, `--test`), in any format and scheme xner reads.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use super::{print_read, read_corpus_file, CorpusArgs, DataArgs, HyperArgs, WindowArgs};
use xner::data::Corpus;
use xner::experiments::{Evaluator, FineTune};
use xner::lowp::Precision;
use xner::train::Checkpoints;

#[derive(Args)]
pub struct TrainArgs {
    /// A model directory (config.json, model.safetensors, tokenizer.json) or a Hugging Face hub id.
    #[arg(long)]
    pub model: String,
    /// A corpus file to train on (CoNLL/column file, JSON Lines or Parquet) instead of PAN-X;
    /// its tags make the model's label set unless --labels gives one.
    #[arg(long, requires = "validation")]
    pub train: Option<PathBuf>,
    /// The corpus file scored after each epoch (with --train).
    #[arg(long, requires = "train")]
    pub validation: Option<PathBuf>,
    /// A corpus file scored once with the final model (with --train): its report is printed
    /// and saved as test_results.json.
    #[arg(long, requires = "train")]
    pub test: Option<PathBuf>,
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Label every subword of a word (transformers' run_ner.py `--label_all_tokens`: later
    /// subwords of a `B-` word get its `I-` label) instead of the first alone. Words are still
    /// predicted and scored once, at their first subword.
    #[arg(long)]
    pub label_all_subwords: bool,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Languages to train on; several are concatenated and shuffled (multilingual training).
    #[arg(long, default_value = "de", value_delimiter = ',')]
    pub train_langs: Vec<String>,
    /// Languages whose validation splits are scored after each epoch (default: the training languages).
    #[arg(long, value_delimiter = ',')]
    pub eval_langs: Option<Vec<String>>,
    /// Keep only the first N training sentences (after sampling and shuffling).
    #[arg(long, value_parser = super::count(1, u32::MAX as u64))]
    pub max_train_samples: Option<usize>,
    /// Keep only the first N validation sentences.
    #[arg(long, value_parser = super::count(1, u32::MAX as u64))]
    pub max_eval_samples: Option<usize>,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Also checkpoint every N steps (default: at the end of each epoch only).
    #[arg(long, default_value_t = 0)]
    pub save_steps: usize,
    /// Output directory: checkpoint-N/ during the run, the final model at the end.
    #[arg(long)]
    pub out: PathBuf,
    /// What the run keeps of its checkpoints (each about three times the model's size): `keep`
    /// the newest, `while-training` (removed once the final model is saved), `none` (an
    /// interrupted run starts over).
    #[arg(long, value_enum, default_value_t = Checkpoints::Keep)]
    pub checkpoints: Checkpoints,
    /// Continue a run from its last checkpoint (the run's --out directory or a checkpoint-N).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop after N steps as if killed (for testing --resume).
    #[arg(long, hide = true)]
    pub halt_after_steps: Option<usize>,
    /// Train with the composed ops and optimizer that other devices (GPUs) run, on any device:
    /// to check that path, or to compare it with the fused CPU kernels.
    #[arg(long)]
    pub composed: bool,
    /// Mixed precision as the Trainer's `bf16=True`: the linear layers' products in bf16
    /// (forward and backward, f32 sums; on the AMX tile unit where the CPU has one), with f32
    /// weights, gradients, AdamW moments, LayerNorm, softmax and loss.
    #[arg(long, conflicts_with = "composed")]
    pub bf16: bool,
}

/// The training and validation corpora: the user's files, or PAN-X's Swiss splits.
fn corpora(args: &TrainArgs) -> Result<(Corpus, Corpus, String)> {
    if let (Some(train), Some(validation)) = (&args.train, &args.validation) {
        let options = args.corpus.read_options()?;
        // The label set comes from the whole file, then the first N sentences are kept.
        let ((mut train_corpus, train_report), (mut validation_corpus, validation_report)) =
            xner::data::read_training_pair(train, validation, &options)?;
        print_read(&train_report, train_corpus.len());
        if let Some(n) = args.max_eval_samples {
            validation_corpus.sentences.truncate(n);
        }
        print_read(&validation_report, validation_corpus.len());
        eprintln!("labels: {}", train_corpus.labels.names().join(" "));
        let describe = format!("{} (validation: {})", train.display(), validation.display());
        if let Some(n) = args.max_train_samples {
            train_corpus.sentences.truncate(n);
        }
        return Ok((train_corpus, validation_corpus, describe));
    }
    let panx = args.data.panx()?;
    let eval_langs = args.eval_langs.clone().unwrap_or_else(|| args.train_langs.clone());
    let seed = args.hyper.seed;
    Ok((
        xner::data::load_languages(&panx, &args.train_langs, "train", seed, args.max_train_samples)?,
        xner::data::load_languages(&panx, &eval_langs, "validation", seed, args.max_eval_samples)?,
        format!("{} (validation: {})", args.train_langs.join("+"), eval_langs.join("+")),
    ))
}

/// Checks the flags together, before any file or model is read.
pub fn validate(args: &TrainArgs) -> Result<()> {
    args.window.validate()?;
    if args.save_steps > 0 && args.checkpoints == Checkpoints::None {
        return Err(
            xner::Error::Usage("--save-steps writes checkpoints; it cannot go with --checkpoints none".into()).into()
        );
    }
    if let Some(dir) = &args.resume {
        xner::train::check_resume(dir, &args.hyper.options(args.save_steps))?;
    }
    Ok(())
}

pub fn run(args: &TrainArgs, device: &Device) -> Result<()> {
    validate(args)?;
    if args.bf16 {
        super::note_caveat("--bf16", Precision::Bf16);
    }
    let (train, validation, describe) = corpora(args)?;
    let alignment = args.window.alignment(args.label_all_subwords);
    let job = FineTune {
        model: args.model.clone(),
        train,
        validation,
        options: args.hyper.options(args.save_steps),
        alignment,
        out: args.out.clone(),
        resume: args.resume.clone(),
        show_progress: true,
        halt_after_steps: args.halt_after_steps,
        checkpoints: args.checkpoints,
        describe,
        device: device.clone(),
        composed: args.composed,
        bf16: args.bf16,
    };
    let start = std::time::Instant::now();
    let rows = xner::experiments::fine_tune(&job)?;
    println!("{}", xner::train::epoch_table_header());
    for r in &rows {
        println!("{}", xner::train::epoch_table_row(r));
    }
    println!("model saved to {} ({:.0} s)", args.out.display(), start.elapsed().as_secs_f64());
    if let Some(test) = &args.test {
        let settings = args.window.eval_settings(args.hyper.batch_size, true, device, Precision::F32);
        let evaluator = Evaluator::load(&args.out, &settings)?;
        let options = evaluator.read_options(&args.corpus.read_options()?);
        let corpus = read_corpus_file(test, &options, false, None)?;
        let eval = evaluator.evaluate(&corpus)?;
        println!("test {} ({} sentences)", test.display(), corpus.len());
        println!("{}", eval.report.to_text());
        let json = eval.to_json()?;
        std::fs::write(args.out.join("test_results.json"), serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
