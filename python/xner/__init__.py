"""xner: multilingual named-entity recognition with transformer encoders, in Rust.

The functions and the ``Tagger`` class are the xner library itself (a PyO3 extension, not a
second implementation): what ``xner tag``, ``xner train`` and ``xner eval`` compute, with the
same outputs. Heavy work runs without the GIL.

    >>> import xner
    >>> tagger = xner.Tagger("models/panx-de", precision="int8")
    >>> tagger.tag(["Jeff Dean ist ein Informatiker bei Google in Kalifornien"])
    [[{'label': 'PER', 'text': 'Jeff Dean', 'start': 0, 'end': 9, 'score': 0.99...}, ...]]

Errors are Python exceptions carrying xner's message: ``FileNotFoundError`` for a missing
file or model directory, ``ValueError`` for bad input (with the file and line where there is
one), ``KeyboardInterrupt`` when Ctrl-C stopped a training run (after saving a checkpoint).
"""

from ._native import Tagger, __version__, evaluate, read_corpus, train

__all__ = ["Tagger", "evaluate", "read_corpus", "train", "__version__"]
