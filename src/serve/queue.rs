//! The batching queue between the HTTP layer and the model (text-embeddings-inference's
//! layering): handlers put tokenized jobs into a bounded queue and await their own reply; one
//! inference thread gathers waiting jobs into a batch (up to a token budget, or until the first
//! job has waited `max_wait`), runs them length-sorted through the `Tagger`, and answers each
//! job. The async runtime never computes; a full queue is refused at once (backpressure); a
//! panic while computing fails that batch's jobs, not the server.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokenizers::Encoding;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::error::Result;
use crate::infer::{Tagged, Tagger};
use crate::pipeline::Aggregation;

/// How batches are formed.
#[derive(Clone, Copy, Debug)]
pub struct BatchOptions {
    /// Tokens (padding excluded) one batch gathers at most; a single larger job runs alone.
    pub max_batch_tokens: usize,
    /// How long the first job of a batch waits for others.
    pub max_wait: Duration,
    /// Jobs waiting at most; more are refused (503).
    pub capacity: usize,
    /// Sequences per forward pass within a batch.
    pub forward_batch: usize,
}

/// One request's texts, tokenized, and where its answer goes.
pub struct Job {
    pub texts: Vec<(String, Encoding)>,
    pub aggregation: Aggregation,
    pub reply: oneshot::Sender<std::result::Result<Done, String>>,
    pub enqueued: Instant,
}

/// A job's answer.
pub struct Done {
    pub tagged: Vec<Tagged>,
    pub queue_seconds: f64,
    pub compute_seconds: f64,
    /// Texts in the batch the job ran in (its own and others').
    pub batch_texts: usize,
}

impl Job {
    pub fn tokens(&self) -> usize {
        self.texts.iter().map(|(_, e)| e.get_ids().len()).sum()
    }
}

/// What the model thread publishes once loaded.
pub struct ModelInfo {
    pub labels: Vec<String>,
    pub architecture: String,
    pub max_length: usize,
    pub stride: usize,
    /// Shared with the handlers that tokenize long documents on the blocking pool.
    pub tokenizer: Arc<tokenizers::Tokenizer>,
}

/// The handle handlers hold.
pub struct Queue {
    sender: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    pub ready: Arc<AtomicBool>,
    pub info: Arc<OnceLock<ModelInfo>>,
    /// Set when loading the model failed: the message.
    pub failed: Arc<OnceLock<String>>,
}

pub enum Refused {
    Full,
    Stopped,
}

impl Queue {
    /// Starts the inference thread, which loads the model with `load` and then serves jobs
    /// until every `Queue` handle is dropped and the jobs already queued are answered.
    pub fn start(
        load: impl FnOnce() -> Result<Tagger> + Send + 'static,
        options: BatchOptions,
        metrics: Arc<Metrics>,
    ) -> (Queue, std::thread::JoinHandle<()>) {
        let (sender, receiver) = mpsc::sync_channel::<Job>(options.capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let info = Arc::new(OnceLock::new());
        let failed = Arc::new(OnceLock::new());
        let queue =
            Queue { sender, depth: depth.clone(), ready: ready.clone(), info: info.clone(), failed: failed.clone() };
        let worker = std::thread::Builder::new()
            .name("xner-inference".into())
            .spawn(move || {
                let tagger = match load() {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = failed.set(e.to_string());
                        return;
                    }
                };
                let _ = info.set(ModelInfo {
                    labels: tagger.labels.clone(),
                    architecture: tagger
                        .model
                        .config
                        .extra
                        .get("architectures")
                        .and_then(|a| a.get(0))
                        .and_then(|a| a.as_str())
                        .unwrap_or("?")
                        .to_string(),
                    max_length: tagger.window.max_len,
                    stride: tagger.window.stride,
                    tokenizer: Arc::new(tagger.tokenizer.clone()),
                });
                ready.store(true, Ordering::SeqCst);
                run(&tagger, &receiver, options, &depth, &metrics);
            })
            .expect("spawning the inference thread");
        (queue, worker)
    }

    /// Queues a job, or says why not at once.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Refused> {
        self.depth.fetch_add(1, Ordering::SeqCst);
        match self.sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => Refused::Full,
                    TrySendError::Disconnected(_) => Refused::Stopped,
                })
            }
        }
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }
}

/// The inference loop: gather, compute, answer; until the channel closes and drains.
fn run(tagger: &Tagger, receiver: &mpsc::Receiver<Job>, options: BatchOptions, depth: &AtomicUsize, metrics: &Metrics) {
    while let Ok(first) = receiver.recv() {
        let mut tokens = first.tokens();
        let deadline = first.enqueued + options.max_wait;
        let mut jobs = vec![first];
        while tokens < options.max_batch_tokens {
            let wait = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(wait) {
                Ok(job) => {
                    tokens += job.tokens();
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        depth.fetch_sub(jobs.len(), Ordering::SeqCst);
        answer(tagger, jobs, options, metrics);
    }
}

/// Runs one batch and answers each of its jobs.
fn answer(tagger: &Tagger, jobs: Vec<Job>, options: BatchOptions, metrics: &Metrics) {
    let start = Instant::now();
    // All texts of all jobs in one length-sorted pass; split back by job afterwards.
    let texts: Vec<(&str, &Encoding)> =
        jobs.iter().flat_map(|j| j.texts.iter().map(|(t, e)| (t.as_str(), e))).collect();
    let aggregations: Vec<Aggregation> = jobs.iter().flat_map(|j| j.texts.iter().map(|_| j.aggregation)).collect();
    let computed = catch_unwind(AssertUnwindSafe(|| {
        tagger.tag_encoded_each(&texts, |i| aggregations[i], options.forward_batch, false).map_err(|e| e.to_string())
    }));
    let compute_seconds = start.elapsed().as_secs_f64();
    let tokens: usize = texts.iter().map(|(_, e)| e.get_ids().len()).sum();
    metrics.record_batch(texts.len(), tokens, compute_seconds);
    let result: std::result::Result<Vec<Tagged>, String> = match computed {
        Ok(r) => r,
        Err(panic) => {
            let what =
                panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            Err(format!("the model failed on this batch: {}", what.unwrap_or_else(|| "panic".into())))
        }
    };
    let batch_texts = texts.len();
    let mut next = 0;
    for job in jobs {
        let n = job.texts.len();
        let queue_seconds = start.duration_since(job.enqueued).as_secs_f64();
        let reply = match &result {
            Ok(all) => Ok(Done { tagged: all[next..next + n].to_vec(), queue_seconds, compute_seconds, batch_texts }),
            Err(e) => Err(e.clone()),
        };
        next += n;
        // A requester that timed out is gone; nothing to answer.
        let _ = job.reply.send(reply);
    }
}
