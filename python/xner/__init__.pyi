"""Type stubs of xner's Python binding (the extension module xner._native)."""

import os
from typing import Literal, Optional, Sequence, TypedDict, Union

__version__: str

PathLike = Union[str, "os.PathLike[str]"]
Precision = Literal["f32", "bf16", "int8"]
Aggregation = Literal["words", "none", "simple", "first", "average", "max"]
Format = Literal["columns", "jsonl", "parquet"]
Scheme = Literal["iob1", "iob2", "bioes", "bilou"]

class _EntityFields(TypedDict):
    label: str
    """The entity type (for aggregation="none": the subword's B-/I- tag)."""
    text: str
    """The input text the entity spans: ``text[start:end]``."""
    start: int
    """Character offset of the first character."""
    end: int
    """Character offset after the last character."""
    score: float
    """The pipeline's score: the mean (or, per strategy, max) probability of the label."""

class Entity(_EntityFields, total=False):
    index: int
    """The subword's position (aggregation="none" only)."""

class Tagger:
    """A trained token classifier with its tokenizer and labels: texts in, entities out.

    ``model_dir`` is a directory with config.json, model.safetensors and tokenizer.json (as
    ``xner train`` or transformers' ``save_pretrained`` writes it; a quantized one from ``xner
    quantize``) or a Hugging Face hub id. ``precision`` is the number format of the encoder's
    linear layers; ``aggregation`` how subword predictions become entities (transformers'
    pipeline strategies, or "words": seqeval's chunks over the tokenizer's words). Texts longer
    than ``max_length`` tokens run as overlapping windows sharing ``stride`` tokens.

    Raises FileNotFoundError when the directory does not exist, ValueError when it is not a
    model directory or an argument is out of range.
    """

    def __init__(
        self,
        model_dir: PathLike,
        device: str = "cpu",
        precision: Precision = "f32",
        aggregation: Aggregation = "simple",
        batch_size: int = 24,
        max_length: Optional[int] = None,
        stride: int = 128,
    ) -> None: ...
    def tag(self, texts: Sequence[str], aggregation: Optional[Aggregation] = None) -> list[list[Entity]]:
        """The entities of each text, in input order: the same as ``xner tag --json``'s
        ``entities``. Texts run in length-sorted batches of ``batch_size``, without the GIL."""
    @property
    def labels(self) -> list[str]:
        """The model's labels in id order (config.json's id2label)."""
    @property
    def precision(self) -> Precision:
        """The number format the model runs in."""

class EpochResult(TypedDict):
    epoch: int
    training_loss: float
    validation_loss: float
    f1: float

class TrainResult(TypedDict):
    out: str
    epochs: list[EpochResult]
    test: Optional[dict]

def read_corpus(
    path: PathLike,
    *,
    format: Optional[Format] = None,
    scheme: Optional[Scheme] = None,
    labels: Optional[Sequence[str]] = None,
    token_column: Optional[int] = None,
    tag_column: Optional[int] = None,
    strict: bool = False,
) -> list[list[tuple[str, str]]]:
    """The sentences of a corpus file as lists of (token, tag), tags converted to IOB2.

    Reads column files (CoNLL, PAN-X TSV), JSON Lines and Parquet (``tokens``/``ner_tags``),
    format and scheme detected unless given. ``labels`` fixes the label set (and names integer
    tags). Raises FileNotFoundError, or ValueError naming the file and line of a bad record.
    """

def train(
    model: PathLike,
    train: PathLike,
    validation: PathLike,
    out: PathLike,
    *,
    test: Optional[PathLike] = None,
    epochs: int = 3,
    batch_size: int = 24,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.01,
    seed: int = 42,
    group_by_length: bool = True,
    bf16: bool = False,
    max_train_samples: Optional[int] = None,
    max_eval_samples: Optional[int] = None,
    max_length: Optional[int] = None,
    stride: int = 128,
    label_all_subwords: bool = False,
    checkpoints: Literal["keep", "while-training", "none"] = "keep",
    resume: Optional[PathLike] = None,
    format: Optional[Format] = None,
    scheme: Optional[Scheme] = None,
    labels: Optional[Sequence[str]] = None,
    device: str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Fine-tunes ``model`` (a directory or hub id) on the corpus file ``train``, exactly as
    ``xner train --train ... --validation ...`` does, and saves the model in ``out``.

    Returns each epoch's training and validation loss and validation F1, and ``test``'s
    scores (as ``evaluate`` returns them) when a test file is given. Progress bars go to
    stderr unless ``progress=False``. Ctrl-C stops at the next step and saves a checkpoint
    (``resume=out`` continues), raising KeyboardInterrupt.
    """

def evaluate(
    model: PathLike,
    file: PathLike,
    *,
    batch_size: int = 24,
    precision: Precision = "f32",
    max_length: Optional[int] = None,
    stride: int = 128,
    max_samples: Optional[int] = None,
    format: Optional[Format] = None,
    scheme: Optional[Scheme] = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Scores a trained model on a corpus file, as ``xner eval --file FILE --json``: keys
    ``f1``, ``strict_f1``, ``loss``, ``sentences``, ``words_scored``, ``report`` (seqeval's,
    per type and averaged), ``strict_report``, ``seconds`` and ``tokens``."""
