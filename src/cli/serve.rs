//! `xner serve`: the HTTP service (`xner::serve`) on a model directory.

use std::time::Duration;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;

use super::{PrecisionArgs, WindowArgs};
use xner::infer::Tagger;
use xner::pipeline::Aggregation;
use xner::serve::queue::BatchOptions;
use xner::serve::ServeOptions;

#[derive(Args)]
pub struct ServeArgs {
    /// A trained model directory (or hub id) with a token-classification head.
    #[arg(long)]
    pub model: String,
    /// The address to listen on (loopback by default: put a proxy in front to expose it).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Tokens one batch gathers at most (padding excluded).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub max_batch_tokens: u32,
    /// How long, in milliseconds, a request waits for others to share its batch.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub max_wait_ms: u32,
    /// Requests that may wait for the model; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,
    /// Seconds before an unanswered request gets 504.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub timeout: u32,
    /// The largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u32).range(64..))]
    pub max_body_bytes: u32,
    /// Texts one request may carry.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_texts: u32,
    /// Sequences per forward pass within a batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub forward_batch: u32,
    /// The aggregation of requests that name none (see `xner tag --help`).
    #[arg(long, value_enum, default_value_t = Aggregation::Words)]
    pub aggregation: Aggregation,
    /// No log line per request on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

pub fn run(args: &ServeArgs, device: &Device) -> Result<()> {
    args.window.validate()?;
    let model_dir = xner::hub::resolve_model(&args.model)?;
    if !model_dir.join("config.json").exists() {
        return Err(xner::Error::invalid(&model_dir, "no config.json: not a model directory").into());
    }
    let options = ServeOptions {
        batch: BatchOptions {
            max_batch_tokens: args.max_batch_tokens as usize,
            max_wait: Duration::from_millis(args.max_wait_ms as u64),
            capacity: args.queue as usize,
            forward_batch: args.forward_batch as usize,
        },
        request_timeout: Duration::from_secs(args.timeout as u64),
        max_body_bytes: args.max_body_bytes as usize,
        max_texts: args.max_texts as usize,
        aggregation: args.aggregation,
        log_requests: !args.quiet,
    };
    let alignment = args.window.alignment(false);
    let device = device.clone();
    let precision = args.precision.chosen();
    let started = std::time::Instant::now();
    let load = move || {
        let tagger = Tagger::load(&model_dir, &device, alignment.max_len, alignment.stride, precision)?;
        eprintln!(
            "model ready in {:.2} s ({} labels, {precision}: {})",
            started.elapsed().as_secs_f64(),
            tagger.labels.len(),
            precision.engine()
        );
        Ok(tagger)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| xner::Error::Usage(format!("cannot listen on {address}: {e}")))?;
        let bound = listener.local_addr().context("the bound address")?;
        eprintln!("listening on http://{bound}");
        xner::serve::serve(listener, load, options, xner::serve::shutdown_signal()).await?;
        eprintln!("stopped: every queued request answered");
        Ok(())
    })
}
