"""How many tokens the products of a PAN-X batch have: subword counts (the model's tokenizer,
<s> and </s> included) of training batches of 24 random sentences and of evaluation batches of
32 length-sorted ones (xner's defaults), the lengths `xner bench --gemm --gemm-tokens` should
cover.

    python scripts/panx_batch_tokens.py TOKENIZER_JSON ../shared/data/panx/de
"""
import sys

import numpy as np
from tokenizers import Tokenizer

tokenizer = Tokenizer.from_file(sys.argv[1])
folder = sys.argv[2]


def sentences(path):
    out, words = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line:
            words.append(line.split("\t")[0])
        elif words:
            out.append(words)
            words = []
    if words:
        out.append(words)
    return out


def lengths(split):
    return np.array([len(tokenizer.encode(s, is_pretokenized=True).ids) for s in sentences(f"{folder}/{split}.tsv")])


train = lengths("train")
rng = np.random.default_rng(0)
batches = np.array([train[rng.permutation(len(train))[:24]].sum() for _ in range(2000)])
print(f"train: {len(train)} sentences, {train.mean():.1f} tokens each (max {train.max()})")
print(f"  batches of 24: mean {batches.mean():.0f}, 5th-95th percentile "
      f"{np.percentile(batches, 5):.0f}-{np.percentile(batches, 95):.0f}, max {batches.max()} tokens")
test = np.sort(lengths("test"))
batches = np.array([test[i:i + 32].sum() for i in range(0, len(test), 32)])
print(f"test: {len(test)} sentences; length-sorted batches of 32: median {np.median(batches):.0f}, "
      f"90th percentile {np.percentile(batches, 90):.0f}, max {batches.max()} tokens "
      f"({(batches > 1024).sum()} of {len(batches)} above 1,024)")
