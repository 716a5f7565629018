"""Loads a checkpoint written by `xner train` with transformers and scores it with seqeval, to
check that xner's checkpoints are real Hugging Face directories and that `xner eval` reports the
same F1 as the Python stack on the same predictions.

    python scripts/hf_check_checkpoint.py --model RUN_DIR --data ../shared/data/panx \
        --lang de --split validation --limit 500 [--xner target/release/xner]

Prints both F1 values and exits non-zero if transformers reports missing or unexpected keys or
the two F1 differ by more than 1e-4.
"""
import argparse, json, os, subprocess, sys
import numpy as np
import torch
from seqeval.metrics import f1_score
from transformers import AutoModelForTokenClassification, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--lang", default="de")
ap.add_argument("--split", default="validation")
ap.add_argument("--limit", type=int, default=500)
ap.add_argument("--xner", default="target/release/xner")
a = ap.parse_args()

model, info = AutoModelForTokenClassification.from_pretrained(a.model, output_loading_info=True)
problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
print("loading info:", {k: len(v) for k, v in info.items()})
tok = AutoTokenizer.from_pretrained(a.model)
model.eval()

# The same sentences as `xner eval --max-samples N`: the Swiss sample of the split
# (datasets' shuffle(seed=0) is numpy's permutation; first frac*n rows), then its first N rows.
FRACS = {"de": 0.629, "fr": 0.229, "it": 0.084, "en": 0.059}
rows, words, tags = [], [], []
for line in open(os.path.join(a.data, a.lang, f"{a.split}.tsv"), encoding="utf-8"):
    line = line.rstrip("\n")
    if not line:
        if words: rows.append((words, tags)); words, tags = [], []
        continue
    w, t = line.split("\t"); words.append(w); tags.append(t)
if words: rows.append((words, tags))
perm = np.random.default_rng(0).permutation(len(rows))
rows = [rows[i] for i in perm[: int(FRACS[a.lang] * len(rows))]][: a.limit]

id2label = model.config.id2label
gold, pred = [], []
with torch.no_grad():
    for words, tags in rows:
        enc = tok(words, is_split_into_words=True, truncation=True, return_tensors="pt")
        logits = model(**enc).logits[0]
        p = logits.argmax(-1).tolist()
        prev, g, q = None, [], []
        for j, w in enumerate(enc.word_ids()):
            if w is not None and w != prev:
                g.append(tags[w]); q.append(id2label[p[j]])
            prev = w
        gold.append(g); pred.append(q)
f1_hf = f1_score(gold, pred)
out = subprocess.run([a.xner, "eval", "--model", a.model, "--data", a.data, "--langs", a.lang, "--split", a.split,
                      "--max-samples", str(a.limit), "--json"], capture_output=True, text=True, check=True)
f1_xner = json.loads(out.stdout)[a.lang]["f1"]
print(f"transformers + seqeval F1 {f1_hf:.6f}; xner eval F1 {f1_xner:.6f}")
if problems or abs(f1_hf - f1_xner) > 1e-4:
    print("MISMATCH", problems); sys.exit(1)
