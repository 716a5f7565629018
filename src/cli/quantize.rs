//! `xner quantize`: an int8 copy of a trained model directory (see `xner::quantize`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct QuantizeArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    pub model: String,
    /// The directory to write (created; files in it are replaced).
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let model_dir = xner::hub::resolve_model(&args.model)?;
    let report = xner::quantize::quantize_dir(&model_dir, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "{}: {} linear weights ({} parameters) in int8; weights {:.1} MB -> {:.1} MB",
        args.out.display(),
        report.quantized_tensors,
        report.quantized_parameters,
        mb(report.bytes_before),
        mb(report.bytes_after)
    );
    println!("run it with --precision int8 (eval, tag, serve); at f32 or bf16 it runs the dequantized weights");
    Ok(())
}
