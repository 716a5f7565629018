//! `xner serve`: an HTTP NER service in three layers, as text-embeddings-inference builds its
//! own: the router here (axum on tokio: request parsing and validation, limits, errors mapped
//! to status codes in one place, metrics and a log line per request) → the batching queue
//! (`queue`) → the model backend (`infer::Tagger`, the same one `xner tag` runs).
//!
//! Endpoints: `POST /v1/ner`, `GET /health`, `GET /v1/model`, `GET /metrics`, and `GET /`, a
//! page that highlights the entities of a pasted text.

pub mod metrics;
pub mod queue;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::infer::Tagger;
use crate::pipeline::Aggregation;
use metrics::Metrics;
use queue::{BatchOptions, Job, Queue, Refused};

/// Limits and batching, all configurable (`xner serve --help`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub batch: BatchOptions,
    /// A request not answered in this time gets 504.
    pub request_timeout: Duration,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// Texts one request may carry.
    pub max_texts: usize,
    /// When a request names none.
    pub aggregation: Aggregation,
    /// Print one JSON line per request on stderr.
    pub log_requests: bool,
}

/// What every handler shares.
struct App {
    queue: Queue,
    metrics: Arc<Metrics>,
    options: ServeOptions,
    next_id: AtomicU64,
}

/// Serves on `listener` until `shutdown` completes; then stops accepting, answers what is
/// queued, and returns. The model is loaded by `load` on the inference thread while the server
/// already answers `/health` (503 until it is ready).
pub async fn serve(
    listener: tokio::net::TcpListener,
    load: impl FnOnce() -> Result<Tagger> + Send + 'static,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (queue, worker) = Queue::start(load, options.batch, metrics.clone());
    let app = Arc::new(App { queue, metrics, options, next_id: AtomicU64::new(1) });
    let router = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/model", get(model_info))
        .route("/metrics", get(metrics_text))
        .route("/v1/ner", post(ner))
        .with_state(app.clone())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error (the server goes on)".into())
        }));
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Usage(format!("server: {e}")))?;
    // The router is gone: the last queue handle goes with `app`, and the inference thread ends
    // once the jobs already queued are answered.
    drop(app);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    Ok(())
}

fn error_response(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({"error": message, "status": status.as_u16()});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The page at `/`: plain HTML, CSS and JavaScript, no build step.
async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if let Some(e) = app.queue.failed.get() {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, format!("the model failed to load: {e}"));
    }
    if app.queue.ready.load(Ordering::SeqCst) {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, "loading the model".into());
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }
}

async fn model_info(State(app): State<Arc<App>>) -> Response {
    match app.queue.info.get() {
        Some(info) => axum::Json(serde_json::json!({
            "labels": info.labels, "architecture": info.architecture, "max_length": info.max_length,
            "stride": info.stride, "aggregation": app.options.aggregation,
            "max_batch_tokens": app.options.batch.max_batch_tokens, "max_texts": app.options.max_texts,
        }))
        .into_response(),
        None => error_response(StatusCode::SERVICE_UNAVAILABLE, "loading the model".into()),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(app.queue.depth());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Requests with more text than this are tokenized off the runtime's threads.
const LONG_INPUT_BYTES: usize = 16 * 1024;

/// `POST /v1/ner`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NerRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
    aggregation: Option<Aggregation>,
    /// Also return the subword tokens and their tags.
    #[serde(default)]
    tokens: bool,
}

/// A request's failure: its status and message (and whether to say when to retry).
struct Failure(StatusCode, String);

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Failure(StatusCode::BAD_REQUEST, message.into())
    }
}

/// What a request's log line says beside its status.
#[derive(Default)]
struct Outcome {
    texts: usize,
    tokens: usize,
    queue_seconds: f64,
    compute_seconds: f64,
    batch_texts: usize,
}

async fn ner(State(app): State<Arc<App>>, request: Request<Body>) -> Response {
    let start = Instant::now();
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let mut outcome = Outcome::default();
    let response = match handle(&app, request, &mut outcome).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(Failure(status, message)) => {
            let mut r = error_response(status, message);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            r
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    app.metrics.record_request(status, seconds);
    if app.options.log_requests {
        let line = serde_json::json!({"id": id, "status": status, "texts": outcome.texts, "tokens": outcome.tokens,
            "batch_texts": outcome.batch_texts, "queue_ms": round_ms(outcome.queue_seconds),
            "compute_ms": round_ms(outcome.compute_seconds), "total_ms": round_ms(seconds)});
        eprintln!("{line}");
    }
    response
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1e4).round() / 10.0
}

async fn handle(app: &App, request: Request<Body>, outcome: &mut Outcome) -> std::result::Result<String, Failure> {
    let limit = app.options.max_body_bytes;
    let bytes = to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| Failure(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {limit} bytes")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Failure::bad(format!("the body is not UTF-8: {e}")))?;
    let parsed: NerRequest = serde_json::from_str(text)
        .map_err(|e| Failure::bad(format!("expected {{\"text\": \"...\"}} or {{\"texts\": [...]}}: {e}")))?;
    let single = parsed.text.is_some();
    let texts = match (parsed.text, parsed.texts) {
        (Some(t), None) => vec![t],
        (None, Some(ts)) if ts.is_empty() => return Err(Failure::bad("\"texts\" is empty")),
        (None, Some(ts)) if ts.len() > app.options.max_texts => {
            return Err(Failure::bad(format!("{} texts in one request; at most {}", ts.len(), app.options.max_texts)))
        }
        (None, Some(ts)) => ts,
        (Some(_), Some(_)) => return Err(Failure::bad("give \"text\" or \"texts\", not both")),
        (None, None) => return Err(Failure::bad("no \"text\" or \"texts\" field")),
    };
    outcome.texts = texts.len();
    if let Some(e) = app.queue.failed.get() {
        return Err(Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("the model failed to load: {e}")));
    }
    let Some(info) = app.queue.info.get() else {
        return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, "loading the model".into()));
    };
    let encode_all = |texts: Vec<String>, tokenizer: &tokenizers::Tokenizer| {
        texts
            .into_iter()
            .map(|t| crate::infer::encode(tokenizer, &t).map(|enc| (t, enc)))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Failure::bad(e.to_string()))
    };
    // Short texts are tokenized in place (microseconds); long documents on the blocking pool,
    // so that they never hold up the runtime's threads.
    let chars: usize = texts.iter().map(String::len).sum();
    let encoded = if chars < LONG_INPUT_BYTES {
        encode_all(texts, &info.tokenizer)?
    } else {
        let tokenizer = Arc::clone(&info.tokenizer);
        tokio::task::spawn_blocking(move || encode_all(texts, &tokenizer))
            .await
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("tokenizing: {e}")))??
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job {
        texts: encoded,
        aggregation: parsed.aggregation.unwrap_or(app.options.aggregation),
        reply,
        enqueued: Instant::now(),
    };
    outcome.tokens = job.tokens();
    app.queue.submit(job).map_err(|refused| match refused {
        Refused::Full => Failure(StatusCode::SERVICE_UNAVAILABLE, "the queue is full; retry shortly".into()),
        Refused::Stopped => Failure(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping".into()),
    })?;
    let done = match tokio::time::timeout(app.options.request_timeout, answer).await {
        Err(_) => {
            let secs = app.options.request_timeout.as_secs_f64();
            return Err(Failure(StatusCode::GATEWAY_TIMEOUT, format!("not answered within {secs} s")));
        }
        Ok(Err(_)) => return Err(Failure(StatusCode::INTERNAL_SERVER_ERROR, "the inference thread stopped".into())),
        Ok(Ok(Err(message))) => return Err(Failure(StatusCode::INTERNAL_SERVER_ERROR, message)),
        Ok(Ok(Ok(done))) => done,
    };
    outcome.queue_seconds = done.queue_seconds;
    outcome.compute_seconds = done.compute_seconds;
    outcome.batch_texts = done.batch_texts;
    let items: Vec<Answer> = done
        .tagged
        .iter()
        .map(|t| Answer {
            entities: &t.entities,
            tokens: parsed.tokens.then_some(&t.tokens[..]),
            tags: parsed.tokens.then_some(&t.tags[..]),
        })
        .collect();
    let body =
        if single { serde_json::to_string(&items[0]) } else { serde_json::to_string(&Answers { results: items }) };
    body.map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// One text's answer (serialized from the structs, so scores print as `xner tag --json`'s).
#[derive(serde::Serialize)]
struct Answer<'a> {
    entities: &'a [crate::pipeline::Entity],
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
}

#[derive(serde::Serialize)]
struct Answers<'a> {
    results: Vec<Answer<'a>>,
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
