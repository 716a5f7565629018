//! xner from Python: a thin PyO3 layer over the `xner` library, the same functions the CLI
//! calls (`Tagger`, `experiments::fine_tune`, `Evaluator`, `data::read_corpus`), no second
//! implementation. Arguments are checked here into the library's typed values; the library's
//! errors come back as Python exceptions carrying its message (file and line where there is one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::Device;
use clap::ValueEnum;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use xner::data::{Format, LabelSet, ReadOptions, Scheme};
use xner::experiments::{Alignment, EvalSettings, Evaluator, FineTune, DEFAULT_STRIDE};
use xner::infer::Tagger as LibTagger;
use xner::lowp::Precision;
use xner::pipeline::{Aggregation, Entity};
use xner::train::{Checkpoints, TrainOptions};

// The signatures below spell the default window stride as a literal, so that Python's
// `inspect.signature` (and the stubs) show it; it is the CLI's default.
const _: () = assert!(DEFAULT_STRIDE == 128);

/// The library's error as the Python exception a user expects: a missing file is a
/// `FileNotFoundError`, an interrupted run a `KeyboardInterrupt`, a tensor failure a
/// `RuntimeError`, anything the user passed or wrote wrong a `ValueError`.
fn py_error(error: xner::Error) -> PyErr {
    let message = error.to_string();
    match &error {
        xner::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        xner::Error::Io { .. } => PyOSError::new_err(message),
        xner::Error::Invalid { path, .. } if !path.exists() => PyFileNotFoundError::new_err(message),
        xner::Error::Interrupted { .. } => PyKeyboardInterrupt::new_err(message),
        xner::Error::Candle(_) => PyRuntimeError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// One of a clap value enum's names (`"int8"`, `"simple"`, `"iob2"`), or a `ValueError` listing them.
fn parse_choice<T: ValueEnum>(what: &str, value: &str) -> PyResult<T> {
    T::from_str(value, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        PyValueError::new_err(format!("{what} must be one of {}, not {value:?}", names.join(", ")))
    })
}

fn parse_device(spec: &str) -> PyResult<Device> {
    xner::device::parse(spec).map_err(py_error)
}

/// A window the model can run: `max_length` tokens (None: the model's limit), `stride` shared.
fn alignment(max_length: Option<usize>, stride: usize, label_all_subwords: bool) -> PyResult<Alignment> {
    let alignment = Alignment { max_len: max_length, stride, label_all_subwords };
    alignment.check().map_err(py_error)?;
    Ok(alignment)
}

/// A model argument: a local directory or a hub id, as `--model` takes it.
fn model_spec(model: &Path) -> String {
    model.to_string_lossy().into_owned()
}

/// Runs `work` without the GIL on a thread of its own, checking for Ctrl-C meanwhile: a
/// `KeyboardInterrupt` asks the library to stop at its next step boundary (training saves a
/// checkpoint there), and the work's own result (`Error::Interrupted`) is what comes back.
fn run_interruptible<T: Send>(py: Python<'_>, work: impl FnOnce() -> xner::Result<T> + Send) -> PyResult<T> {
    std::thread::scope(|scope| {
        let handle = scope.spawn(work);
        let mut interrupt: Option<PyErr> = None;
        while !handle.is_finished() {
            py.detach(|| std::thread::sleep(Duration::from_millis(50)));
            if interrupt.is_none() {
                if let Err(e) = py.check_signals() {
                    xner::train::request_stop();
                    interrupt = Some(e);
                }
            }
        }
        let result = handle.join().map_err(|_| PyRuntimeError::new_err("xner panicked (a bug: please report it)"))?;
        match (result, interrupt) {
            (Ok(value), _) => Ok(value),
            (Err(e @ xner::Error::Interrupted { .. }), _) => Err(py_error(e)),
            (Err(_), Some(interrupt)) => Err(interrupt),
            (Err(e), None) => Err(py_error(e)),
        }
    })
}

/// The Python object of a JSON value (through `json.loads`, so numbers and nesting are exactly
/// what the CLI's `--json` prints).
fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

fn entity_dict<'py>(py: Python<'py>, entity: &Entity) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("label", &entity.label)?;
    dict.set_item("text", &entity.text)?;
    dict.set_item("start", entity.start)?;
    dict.set_item("end", entity.end)?;
    dict.set_item("score", entity.score)?;
    if let Some(index) = entity.index {
        dict.set_item("index", index)?;
    }
    Ok(dict)
}

/// A trained token classifier with its tokenizer and labels: texts in, entities out.
#[pyclass(module = "xner", frozen)]
struct Tagger {
    inner: LibTagger,
    aggregation: Aggregation,
    batch_size: usize,
}

#[pymethods]
impl Tagger {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (model_dir, device = "cpu", precision = "f32", aggregation = "simple", batch_size = 24, max_length = None, stride = 128))]
    fn new(
        py: Python<'_>,
        model_dir: PathBuf,
        device: &str,
        precision: &str,
        aggregation: &str,
        batch_size: usize,
        max_length: Option<usize>,
        stride: usize,
    ) -> PyResult<Self> {
        let precision: Precision = parse_choice("precision", precision)?;
        let aggregation: Aggregation = parse_choice("aggregation", aggregation)?;
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be at least 1"));
        }
        let window = alignment(max_length, stride, false)?;
        let device = parse_device(device)?;
        let spec = model_spec(&model_dir);
        let inner = py
            .detach(|| {
                let dir = xner::hub::resolve_model(&spec)?;
                LibTagger::load(&dir, &device, window.max_len, window.stride, precision)
            })
            .map_err(py_error)?;
        Ok(Tagger { inner, aggregation, batch_size })
    }

    /// Entities of each text: a list per text of dicts with label, text, start, end (character
    /// offsets, end exclusive) and score.
    #[pyo3(signature = (texts, aggregation = None))]
    fn tag<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        aggregation: Option<&str>,
    ) -> PyResult<Bound<'py, PyList>> {
        if texts.is_instance_of::<pyo3::types::PyString>() {
            return Err(PyValueError::new_err("tag takes a list of texts; for one text, pass [text]"));
        }
        let texts: Vec<String> = texts
            .try_iter()
            .map_err(|_| PyValueError::new_err("tag takes a list of texts (str)"))?
            .enumerate()
            .map(|(i, item)| {
                item?.extract::<String>().map_err(|_| PyValueError::new_err(format!("texts[{i}] is not a str")))
            })
            .collect::<PyResult<_>>()?;
        let aggregation = match aggregation {
            Some(name) => parse_choice("aggregation", name)?,
            None => self.aggregation,
        };
        let tagged = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                self.inner.tag(&refs, aggregation, self.batch_size)
            })
            .map_err(py_error)?;
        let out = PyList::empty(py);
        for text in &tagged {
            let entities = PyList::empty(py);
            for entity in &text.entities {
                entities.append(entity_dict(py, entity)?)?;
            }
            out.append(entities)?;
        }
        Ok(out)
    }

    /// The model's labels, in id order.
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.inner.labels.clone()
    }

    /// The number format of the encoder's linear layers ("f32", "bf16" or "int8").
    #[getter]
    fn precision(&self) -> String {
        self.inner.model.precision().name().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "xner.Tagger({} labels, precision={}, aggregation={})",
            self.inner.labels.len(),
            self.inner.model.precision().name(),
            self.aggregation.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
        )
    }
}

/// How corpus files are read, from the keyword arguments the functions share.
fn read_options(
    format: Option<&str>,
    scheme: Option<&str>,
    labels: Option<Vec<String>>,
    token_column: Option<usize>,
    tag_column: Option<usize>,
    strict: bool,
) -> PyResult<ReadOptions> {
    let format: Option<Format> = format.map(|f| parse_choice("format", f)).transpose()?;
    let scheme: Option<Scheme> = scheme.map(|s| parse_choice("scheme", s)).transpose()?;
    if token_column == Some(0) || tag_column == Some(0) {
        return Err(PyValueError::new_err("columns are numbered from 1"));
    }
    let fixed =
        labels.as_ref().map(|names| LabelSet::from_names(names.clone(), "labels")).transpose().map_err(py_error)?;
    Ok(ReadOptions {
        format,
        token_column,
        tag_column,
        scheme,
        labels: fixed,
        tag_names: labels,
        strict,
        ..Default::default()
    })
}

/// Sentences of a corpus file (CoNLL/column, JSON Lines or Parquet) as lists of (token, tag),
/// tags in IOB2.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (path, *, format = None, scheme = None, labels = None, token_column = None, tag_column = None, strict = false))]
fn read_corpus<'py>(
    py: Python<'py>,
    path: PathBuf,
    format: Option<&str>,
    scheme: Option<&str>,
    labels: Option<Vec<String>>,
    token_column: Option<usize>,
    tag_column: Option<usize>,
    strict: bool,
) -> PyResult<Bound<'py, PyList>> {
    let options = read_options(format, scheme, labels, token_column, tag_column, strict)?;
    let corpus = py.detach(|| xner::data::read_corpus(&path, &options)).map_err(py_error)?;
    let out = PyList::empty(py);
    for sentence in &corpus.sentences {
        let pairs = PyList::empty(py);
        for (word, tag) in sentence.words.iter().zip(corpus.tags(sentence)) {
            pairs.append(PyTuple::new(py, [word.as_str(), tag.as_str()])?)?;
        }
        out.append(pairs)?;
    }
    Ok(out)
}

/// Fine-tunes `model` on the corpus file `train`, scoring `validation` after each epoch, and
/// saves the model in `out`; returns the epochs' losses and F1 (and `test`'s scores).
#[pyfunction]
#[pyo3(signature = (model, train, validation, out, *, test = None, epochs = 3, batch_size = 24, learning_rate = 5e-5,
    weight_decay = 0.01, seed = 42, group_by_length = true, bf16 = false, max_train_samples = None,
    max_eval_samples = None, max_length = None, stride = 128, label_all_subwords = false,
    checkpoints = "keep", resume = None, format = None, scheme = None, labels = None, device = "cpu", progress = true))]
#[allow(clippy::too_many_arguments)]
fn train<'py>(
    py: Python<'py>,
    model: PathBuf,
    train: PathBuf,
    validation: PathBuf,
    out: PathBuf,
    test: Option<PathBuf>,
    epochs: usize,
    batch_size: usize,
    learning_rate: f64,
    weight_decay: f64,
    seed: u64,
    group_by_length: bool,
    bf16: bool,
    max_train_samples: Option<usize>,
    max_eval_samples: Option<usize>,
    max_length: Option<usize>,
    stride: usize,
    label_all_subwords: bool,
    checkpoints: &str,
    resume: Option<PathBuf>,
    format: Option<&str>,
    scheme: Option<&str>,
    labels: Option<Vec<String>>,
    device: &str,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if epochs == 0 || batch_size == 0 {
        return Err(PyValueError::new_err("epochs and batch_size must be at least 1"));
    }
    let bad = |x: f64, min: f64| !x.is_finite() || x < min;
    if bad(learning_rate, f64::MIN_POSITIVE) || bad(weight_decay, 0.0) {
        return Err(PyValueError::new_err("learning_rate must be positive and weight_decay non-negative"));
    }
    let checkpoints: Checkpoints = parse_choice("checkpoints", checkpoints)?;
    let window = alignment(max_length, stride, label_all_subwords)?;
    let device = parse_device(device)?;
    let options = read_options(format, scheme, labels, None, None, false)?;
    let hyper = TrainOptions {
        epochs,
        batch_size,
        lr: learning_rate,
        weight_decay,
        seed,
        group_by_length,
        ..TrainOptions::default()
    };
    if let Some(dir) = &resume {
        xner::train::check_resume(dir, &hyper).map_err(py_error)?;
    }
    let spec = model_spec(&model);
    let (rows, test_results) = run_interruptible(py, || {
        let ((mut train_corpus, _), (mut validation_corpus, _)) =
            xner::data::read_training_pair(&train, &validation, &options)?;
        if let Some(n) = max_train_samples {
            train_corpus.sentences.truncate(n);
        }
        if let Some(n) = max_eval_samples {
            validation_corpus.sentences.truncate(n);
        }
        if progress {
            eprintln!("labels: {}", train_corpus.labels.names().join(" "));
        }
        let job = FineTune {
            model: spec,
            train: train_corpus,
            validation: validation_corpus,
            options: hyper,
            alignment: window,
            out: out.clone(),
            resume,
            show_progress: progress,
            halt_after_steps: None,
            checkpoints,
            describe: format!("{} (validation: {})", train.display(), validation.display()),
            device: device.clone(),
            composed: false,
            bf16,
        };
        let rows = xner::experiments::fine_tune(&job)?;
        let test_results = match &test {
            Some(path) => {
                let settings = EvalSettings { alignment: window, ..EvalSettings::new(batch_size, progress, device) };
                let evaluator = Evaluator::load(&out, &settings)?;
                let corpus = xner::data::read_corpus(path, &evaluator.read_options(&options))?;
                Some(evaluator.evaluate(&corpus)?.to_json()?)
            }
            None => None,
        };
        Ok((rows, test_results))
    })?;
    let result = serde_json::json!({
        "out": out.to_string_lossy(),
        "epochs": rows.iter().map(|r| serde_json::json!({"epoch": r.epoch, "training_loss": r.training_loss,
            "validation_loss": r.validation_loss, "f1": r.f1})).collect::<Vec<_>>(),
        "test": test_results,
    });
    json_to_py(py, &result)
}

/// Scores a trained model on a corpus file: seqeval's report (as `xner eval --json`), loss,
/// counts and speed.
#[pyfunction]
#[pyo3(signature = (model, file, *, batch_size = 24, precision = "f32", max_length = None, stride = 128,
    max_samples = None, format = None, scheme = None, device = "cpu", progress = true))]
#[allow(clippy::too_many_arguments)]
fn evaluate<'py>(
    py: Python<'py>,
    model: PathBuf,
    file: PathBuf,
    batch_size: usize,
    precision: &str,
    max_length: Option<usize>,
    stride: usize,
    max_samples: Option<usize>,
    format: Option<&str>,
    scheme: Option<&str>,
    device: &str,
    progress: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if batch_size == 0 {
        return Err(PyValueError::new_err("batch_size must be at least 1"));
    }
    let precision: Precision = parse_choice("precision", precision)?;
    let window = alignment(max_length, stride, false)?;
    let device = parse_device(device)?;
    let options = read_options(format, scheme, None, None, None, false)?;
    let spec = model_spec(&model);
    let results = run_interruptible(py, || {
        let dir = xner::hub::resolve_model(&spec)?;
        let settings = EvalSettings { alignment: window, precision, ..EvalSettings::new(batch_size, progress, device) };
        let evaluator = Evaluator::load(&dir, &settings)?;
        let mut corpus = xner::data::read_corpus(&file, &evaluator.read_options(&options))?;
        if let Some(n) = max_samples {
            corpus.sentences.truncate(n);
        }
        evaluator.evaluate(&corpus)?.to_json()
    })?;
    json_to_py(py, &results)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tagger>()?;
    m.add_function(wrap_pyfunction!(read_corpus, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
