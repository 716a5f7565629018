//! `xner bench`: training-step phases and inference timed, beside PyTorch on request.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;

use xner::align::Aligner;
use xner::data::{LabelSet, PanxDir};
use xner::model::TokenClassifier;

#[derive(Args)]
pub struct BenchArgs {
    /// A model directory (or hub id): the weights, and the tokenizer for --sentences.
    #[arg(long)]
    pub model: String,
    /// Random weights of this shape instead of the model's (xlmr-base: 278 M parameters;
    /// e5-small), written once to a temporary directory that both sides load.
    #[arg(long)]
    pub random_shape: Option<String>,
    #[arg(long, default_value_t = 24, value_parser = super::count(1, 65_536))]
    pub batch_size: usize,
    /// Synthetic batches: tokens per sentence (no padding).
    #[arg(long, default_value_t = 32, value_parser = super::count(3, 512))]
    pub seq_len: usize,
    /// Synthetic batches: timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3, value_parser = super::count(1, 100_000))]
    pub steps: usize,
    /// Real sentences instead: the first N of --lang's Swiss-corpus training split, in the
    /// length-grouped batches training makes (so padding is as in training).
    #[arg(long, value_parser = super::count(1, u32::MAX as u64))]
    pub sentences: Option<usize>,
    #[arg(long, default_value = "de")]
    pub lang: String,
    /// PAN-X directory holding <lang>/{train,validation,test}.tsv
    #[arg(long, env = "XNER_DATA", default_value = "../shared/data/panx")]
    pub data: PathBuf,
    /// A Python with torch + transformers: also run the same batches through
    /// scripts/bench_torch.py in this run (on the same --device) and print the ratios.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Run the composed ops (what other devices run) instead of the fused CPU kernels: what
    /// the fusion is worth.
    #[arg(long)]
    pub composed: bool,
    /// Training steps with the linear layers' products in bf16 (`train --bf16`).
    #[arg(long, conflicts_with = "composed")]
    pub bf16: bool,
    #[arg(long)]
    pub json: bool,
    /// Time the model's matrix products instead (every linear layer forward, and its two
    /// backward products), in f32 and, for inference, bf16 and int8; with --python, beside
    /// torch's f32 and bf16 (oneDNN) on the same shapes in the same run.
    #[arg(long)]
    pub gemm: bool,
    /// --gemm: packed tokens per product (PAN-X batches of 24 sentences hold 400–800).
    #[arg(long, default_value = "512,2048", value_delimiter = ',', value_parser = super::count(1, 1 << 20))]
    pub gemm_tokens: Vec<usize>,
    /// --gemm: rounds, each timing torch's side and then xner's; the best of each is kept, so
    /// that a slow minute of a shared machine does not fall on one side only.
    #[arg(long, default_value_t = 2, value_parser = super::count(1, 20))]
    pub gemm_rounds: usize,
    /// --precision for the inference pass of the timed batches (training is f32).
    #[command(flatten)]
    pub precision: super::PrecisionArgs,
}

pub fn run(args: &BenchArgs, device: &Device) -> Result<()> {
    if args.gemm {
        return run_gemm(args);
    }
    let source = xner::hub::resolve_model(&args.model)?;
    let scratch = Scratch::new()?;
    let dir = match &args.random_shape {
        Some(name) => {
            let dir = scratch.join("random-model");
            xner::bench::write_random_model(&dir, xner::bench::Shape::named(name)?, 0)?;
            dir
        }
        None => source.clone(),
    };
    let labels = LabelSet::panx();
    let mut model = TokenClassifier::load(&dir, Some(labels.names()), 0, device)?;
    if args.composed {
        model.set_kernels(xner::model::Kernels::Composed)?;
    }
    if args.bf16 {
        model.set_kernels(xner::model::Kernels::FusedBf16)?;
    }
    model.set_precision(args.precision.chosen())?;
    let (batches, what) = match args.sentences {
        Some(n) => {
            let panx = PanxDir::new(&args.data);
            let corpus = xner::data::load_languages(&panx, std::slice::from_ref(&args.lang), "train", 0, Some(n))?;
            let aligner = Aligner::from_file(&source.join("tokenizer.json"))?;
            let aligned = aligner.align_corpus(&corpus)?;
            let what = format!(
                "{} {} training sentences in batches of {}",
                aligned.sentences.len(),
                args.lang,
                args.batch_size
            );
            (xner::bench::real_batches(&model, &aligned.sentences, args.batch_size)?, what)
        }
        None => (
            xner::bench::synthetic_batches(&model, args.batch_size, args.seq_len, args.steps.max(1))?,
            format!("{} synthetic batches of {}x{}", args.steps.max(1), args.batch_size, args.seq_len),
        ),
    };
    let ours = xner::bench::time_batches(&model, &batches)?;
    let our_peak = xner::bench::peak_memory();
    let torch = match &args.python {
        Some(py) => {
            let file = scratch.join("batches.json");
            write_batches(&file, &batches)?;
            Some(torch_bench(py, &dir, &file, device)?)
        }
        None => None,
    };
    drop(scratch);
    if args.json {
        let value = serde_json::json!({"workload": what, "device": xner::device::name(device),
            "kernels": format!("{:?}", model.kernels()), "xner": ours, "xner_peak_bytes": our_peak, "torch": torch});
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let gib = |b: Option<f64>| b.map_or("?".to_string(), |b| format!("{:.2} GiB", b / (1u64 << 30) as f64));
    println!(
        "{} ({} parameters{}) on {} ({} kernels), {what}: {:.1} % padding in the padded batches",
        args.model,
        model.num_parameters(),
        args.random_shape.as_ref().map_or(String::new(), |s| format!(", random {s} weights")),
        xner::device::name(device),
        format!("{:?}", model.kernels()).to_lowercase(),
        100.0 * ours.padding_fraction()
    );
    let rate = |tokens: usize, secs: f64| format!("{:.0}", tokens as f64 / secs);
    let mut rows = vec![];
    let row = |phase: &str, x: f64, t: Option<f64>| {
        let mut r = vec![phase.to_string(), format!("{x:.3}")];
        if let Some(t) = t {
            r.push(format!("{t:.3}"));
            r.push(format!("{:.2}x", t / x));
        }
        r
    };
    let get = |k: &str| torch.as_ref().map(|p| p[k].as_f64().unwrap_or(f64::NAN));
    let torch_step = torch
        .as_ref()
        .map(|_| get("forward").unwrap_or(0.0) + get("backward").unwrap_or(0.0) + get("optimizer").unwrap_or(0.0));
    rows.push(row("forward", ours.forward, get("forward")));
    rows.push(row("backward", ours.backward, get("backward")));
    rows.push(row("optimizer", ours.optimizer, get("optimizer")));
    rows.push(row("training steps", ours.step(), torch_step));
    rows.push(row("inference", ours.inference, get("inference")));
    let mut header = vec!["seconds (sum)", "xner"];
    if torch.is_some() {
        header.extend(["torch", "speed-up"]);
    }
    print!("{}", xner::table::columns(&header, &rows));
    println!(
        "xner: {} real tokens/s training, {} inference; peak memory {}",
        rate(ours.tokens, ours.step()),
        rate(ours.tokens, ours.inference),
        gib(our_peak.map(|b| b as f64))
    );
    println!(
        "xner's inference layout of the weights (made once per evaluation, not in the sums): {:.3} s",
        ours.inference_setup
    );
    if let (Some(t), Some(step)) = (&torch, torch_step) {
        println!(
            "torch: {} real tokens/s training, {} inference; peak memory {} (torch {})",
            rate(ours.tokens, step),
            rate(ours.tokens, get("inference").unwrap_or(f64::NAN)),
            gib(get("peak_bytes")),
            t["torch"].as_str().unwrap_or("?")
        );
        if let Some(gpu) = t["gpu"].as_str() {
            println!("torch on {gpu}: peak GPU memory allocated {}", gib(get("gpu_peak_bytes")));
        }
    }
    Ok(())
}

/// `xner bench --gemm`: GFLOP/s of each product the model runs, ours beside torch's.
fn run_gemm(args: &BenchArgs) -> Result<()> {
    use xner::lowp::Precision;
    let (hidden, intermediate) = match &args.random_shape {
        Some(name) => {
            let shape = xner::bench::Shape::named(name)?;
            (shape.hidden, shape.intermediate)
        }
        None => {
            let dir = xner::hub::resolve_model(&args.model)?;
            let config = xner::model::Config::from_file(&dir.join("config.json"))?;
            (config.hidden_size, config.intermediate_size)
        }
    };
    let shapes = xner::bench::gemm_shapes(hidden, intermediate, &args.gemm_tokens);
    let precisions = |shape: &xner::bench::GemmShape| -> &'static [Precision] {
        if shape.inference {
            &[Precision::F32, Precision::Bf16, Precision::Int8]
        } else {
            &[Precision::F32, Precision::Bf16]
        }
    };
    let engine = |p: Precision| format!("{} ({})", p, p.engine());
    if !args.json {
        eprintln!(
            "{} threads; xner {}, {}; best of {} rounds",
            rayon::current_num_threads(),
            engine(Precision::Bf16),
            engine(Precision::Int8),
            args.gemm_rounds
        );
    }
    // Per round, one torch process; per shape, torch's side and then xner's, within the same
    // second (this VM's speed drifts from minute to minute); the best of each kept.
    let mut torch_version = None;
    let mut torch_best: Vec<Vec<Option<f64>>> = shapes.iter().map(|s| vec![None; precisions(s).len()]).collect();
    let mut best: Vec<Vec<f64>> = shapes.iter().map(|s| vec![0.0; precisions(s).len()]).collect();
    for _ in 0..args.gemm_rounds {
        let mut peer = args.python.as_deref().map(TorchGemm::start).transpose()?;
        for (i, shape) in shapes.iter().enumerate() {
            if let Some(peer) = &mut peer {
                let row = peer.time(shape)?;
                for (p, kept) in precisions(shape).iter().zip(torch_best[i].iter_mut()) {
                    if let Some(new) = row[p.name()].as_f64() {
                        *kept = Some(kept.map_or(new, |old| old.max(new)));
                    }
                }
            }
            for (&p, best) in precisions(shape).iter().zip(best[i].iter_mut()) {
                *best = best.max(xner::bench::time_gemm(shape, p, 0.3));
            }
        }
        if let Some(peer) = peer {
            torch_version = Some(peer.finish()?);
        }
    }
    let mut rows = vec![];
    let mut out = vec![];
    for (i, shape) in shapes.iter().enumerate() {
        let mut entry = serde_json::json!({"shape": shape});
        for ((&p, &ours), &peer) in precisions(shape).iter().zip(&best[i]).zip(&torch_best[i]) {
            entry[p.name()] = serde_json::json!({"xner": ours, "torch": peer});
            let ratio = peer.map_or(String::new(), |t| format!("{:.0} %", 100.0 * ours / t));
            rows.push(vec![
                shape.name.clone(),
                format!("{}x{}x{}", shape.m, shape.k, shape.n),
                p.name().to_string(),
                format!("{ours:.0}"),
                peer.map_or("-".into(), |t| format!("{t:.0}")),
                ratio,
            ]);
        }
        out.push(entry);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"torch": torch_version, "products": out}))?);
    } else {
        let header = ["product", "m x k x n", "precision", "xner GFLOP/s", "torch GFLOP/s", "xner / torch"];
        print!("{}", xner::table::columns(&header, &rows));
    }
    Ok(())
}

/// The repository's script `name`: where this binary was built, else under the working
/// directory (a binary carried to another machine with a copy of the repository).
fn script(name: &str) -> Result<PathBuf> {
    let built_here = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name);
    let script = if built_here.exists() { built_here } else { Path::new("scripts").join(name) };
    if !script.exists() {
        bail!("no scripts/{name} in {} or the working directory", env!("CARGO_MANIFEST_DIR"));
    }
    Ok(script)
}

/// scripts/bench_gemm.py, running: it times each shape sent to it, one at a time.
struct TorchGemm {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    /// Its error output, read on a thread of its own (a full pipe would stop the script).
    errors: Option<std::thread::JoinHandle<String>>,
    script: PathBuf,
    torch_version: serde_json::Value,
}

impl TorchGemm {
    fn start(python: &Path) -> Result<TorchGemm> {
        use std::process::{Command, Stdio};
        let script = script("bench_gemm.py")?;
        let threads = rayon::current_num_threads().to_string();
        let mut child = Command::new(python)
            .arg(&script)
            .args(["--threads", &threads])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} {}", python.display(), script.display()))?;
        let input = child.stdin.take().context("bench_gemm.py's stdin")?;
        let output = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().context("its stdout")?));
        let errors = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
                text
            })
        });
        let mut peer = TorchGemm { child, input, output, errors, script, torch_version: serde_json::Value::Null };
        peer.torch_version = peer.line()?["torch"].clone();
        Ok(peer)
    }

    /// The next line of JSON the script prints; its error output where it stopped instead.
    fn line(&mut self) -> Result<serde_json::Value> {
        match self.output.next() {
            Some(line) => {
                let line = line.with_context(|| format!("reading {}", self.script.display()))?;
                serde_json::from_str(&line).with_context(|| format!("{} printed {line:?}", self.script.display()))
            }
            None => {
                let status = self.child.wait()?;
                let errors = self.errors.take().and_then(|e| e.join().ok()).unwrap_or_default();
                bail!("{} stopped ({status}): {}", self.script.display(), errors.trim());
            }
        }
    }

    /// torch's GFLOP/s on `shape`, per precision.
    fn time(&mut self, shape: &xner::bench::GemmShape) -> Result<serde_json::Value> {
        use std::io::Write;
        writeln!(self.input, "{}", serde_json::to_string(shape)?)
            .with_context(|| format!("sending a shape to {}", self.script.display()))?;
        self.input.flush()?;
        self.line()
    }

    /// Ends the script (its input closed); the torch version it reported.
    fn finish(self) -> Result<serde_json::Value> {
        let TorchGemm { mut child, input, errors, script, torch_version, .. } = self;
        drop(input);
        let status = child.wait()?;
        let errors = errors.and_then(|e| e.join().ok()).unwrap_or_default();
        if !status.success() {
            bail!("{} failed ({status}): {}", script.display(), errors.trim());
        }
        Ok(torch_version)
    }
}

/// A scratch directory under the system's temporary directory, removed when dropped — also
/// when the command fails half-way (it can hold a 1.1 GB random XLM-R-base model).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xner-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The batches as JSON for scripts/bench_torch.py: per batch, the unpadded ids and labels of
/// each sentence (it pads them as transformers' collator does).
pub fn write_batches(path: &Path, batches: &[xner::model::Batch]) -> Result<()> {
    let mut out = vec![];
    for b in batches {
        let ids: Vec<Vec<u32>> = b.input_ids.to_vec2()?;
        let mask: Vec<Vec<u32>> = b.attention_mask.to_vec2()?;
        let labels: Vec<Vec<i64>> = b.labels.to_vec2()?;
        let real = |row: usize| mask[row].iter().filter(|&&m| m != 0).count();
        out.push(serde_json::json!({
            "input_ids": (0..ids.len()).map(|r| ids[r][..real(r)].to_vec()).collect::<Vec<_>>(),
            "labels": (0..ids.len()).map(|r| labels[r][..real(r)].to_vec()).collect::<Vec<_>>(),
        }));
    }
    std::fs::write(path, serde_json::to_string(&out)?).with_context(|| format!("writing {}", path.display()))
}

/// Runs scripts/bench_torch.py with `python` on the same model and batches.
pub fn torch_bench(python: &Path, dir: &Path, batches: &Path, device: &Device) -> Result<serde_json::Value> {
    let script = script("bench_torch.py")?;
    let threads = rayon::current_num_threads().to_string();
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--model", &dir.display().to_string(), "--batches", &batches.display().to_string()])
        .args(["--threads", &threads])
        .args(["--device", &xner::device::name(device)])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("{} printed no JSON: {text}", script.display()))
}
