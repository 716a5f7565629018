"""The transformers peer of `xner train --train FILE --validation FILE --test FILE`: a
run_ner.py-style fine-tune (transformers Trainer + seqeval) on column files (CoNLL-2003 and the
like), with the same label set, alignment and hyperparameters as xner's defaults, so that the
two F1 scores can be set side by side (docs/RESULTS.md).

  python scripts/ref_ner_files.py --model models/e5-small --train eng.train \
      --validation eng.testa --test eng.testb [--scheme iob1] [--epochs 2] [--out peer.json]

Needs torch, transformers, datasets, seqeval and accelerate. Reading follows xner's rules for
column files, written out here independently: token in the first column, tag in the last,
`-DOCSTART-` and blank lines end a sentence; IOB1 tags become IOB2 (an `I-X` that does not
continue an `X` entity becomes `B-X`); the label list is O, then B-/I- of each type in
alphabetical order. Words are labelled on their first subword (transformers' `word_ids()`),
sequences truncated at 512 tokens (xner windows them instead; CoNLL-2003 has none that long).
"""
import argparse, json, tempfile, time

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--train", required=True)
p.add_argument("--validation", required=True)
p.add_argument("--test", default="")
p.add_argument("--scheme", default="iob2", choices=["iob1", "iob2"])
p.add_argument("--epochs", type=float, default=3)
p.add_argument("--batch", type=int, default=24)
p.add_argument("--lr", type=float, default=5e-5)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=42)
p.add_argument("--group-by-length", action="store_true")
p.add_argument("--out", default="")
a = p.parse_args()

import torch

torch.set_num_threads(a.threads)
from datasets import Dataset
from seqeval.metrics import classification_report, f1_score
from transformers import (AutoConfig, AutoModelForTokenClassification, AutoTokenizer,
                          DataCollatorForTokenClassification, Trainer, TrainingArguments)


def read_columns(path):
    sentences, words, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        words.append(cols[0])
        tags.append(cols[-1])
    if words:
        sentences.append((words, tags))
    return sentences


def iob1_to_iob2(tags):
    out, prev = [], "O"
    for t in tags:
        if t.startswith("I-") and not (prev != "O" and prev[2:] == t[2:]):
            out.append("B-" + t[2:])
        else:
            out.append(t)
        prev = t
    return out


splits = {"train": a.train, "validation": a.validation}
if a.test:
    splits["test"] = a.test
data = {}
for name, path in splits.items():
    sents = read_columns(path)
    if a.scheme == "iob1":
        sents = [(w, iob1_to_iob2(t)) for w, t in sents]
    data[name] = sents
types = sorted({t[2:] for w, tags in data["train"] for t in tags if t != "O"})
labels = ["O"] + [f"{p}-{ty}" for ty in types for p in "BI"]
label2id = {l: i for i, l in enumerate(labels)}

tok = AutoTokenizer.from_pretrained(a.model)


def encode(sents):
    ds = Dataset.from_dict({"tokens": [w for w, _ in sents], "ner_tags": [[label2id[t] for t in tags] for _, tags in sents]})

    def align(examples):
        ti = tok(examples["tokens"], truncation=True, max_length=512, is_split_into_words=True)
        all_ids = []
        for i, label in enumerate(examples["ner_tags"]):
            prev, ids = None, []
            for w in ti.word_ids(batch_index=i):
                ids.append(-100 if w is None or w == prev else label[w])
                prev = w
            all_ids.append(ids)
        ti["labels"] = all_ids
        return ti

    return ds.map(align, batched=True, remove_columns=["tokens", "ner_tags"])


enc = {name: encode(s) for name, s in data.items()}


def aligned_tags(predictions, label_ids):
    preds = np.argmax(predictions, axis=2)
    yp, yt = [], []
    for b in range(preds.shape[0]):
        keep = label_ids[b] != -100
        yt.append([labels[i] for i in label_ids[b][keep]])
        yp.append([labels[i] for i in preds[b][keep]])
    return yp, yt


def compute_metrics(ev):
    yp, yt = aligned_tags(ev.predictions, ev.label_ids)
    return {"f1": f1_score(yt, yp)}


cfg = AutoConfig.from_pretrained(a.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
args = TrainingArguments(output_dir=tempfile.mkdtemp(), log_level="error", num_train_epochs=a.epochs,
    per_device_train_batch_size=a.batch, per_device_eval_batch_size=32, eval_strategy="epoch",
    save_strategy="no", weight_decay=0.01, learning_rate=a.lr, seed=a.seed, disable_tqdm=True,
    logging_strategy="epoch", report_to=[], use_cpu=True, dataloader_num_workers=0,
    **({"train_sampling_strategy": "group_by_length"} if a.group_by_length else {}))
trainer = Trainer(model_init=lambda: AutoModelForTokenClassification.from_pretrained(a.model, config=cfg), args=args,
                  data_collator=DataCollatorForTokenClassification(tok), compute_metrics=compute_metrics,
                  train_dataset=enc["train"], eval_dataset=enc["validation"])
t0 = time.time()
trainer.train()
train_s = time.time() - t0
res = {"model": a.model, "labels": labels, "train_rows": enc["train"].num_rows, "epochs": a.epochs,
       "group_by_length": a.group_by_length, "train_seconds": round(train_s, 1),
       "log": trainer.state.log_history, "f1": {}, "report": {}}
for name in [n for n in ("validation", "test") if n in enc]:
    out = trainer.predict(enc[name])
    yp, yt = aligned_tags(out.predictions, out.label_ids)
    res["f1"][name] = round(f1_score(yt, yp), 4)
    res["report"][name] = classification_report(yt, yp, digits=4)
print(json.dumps(res, indent=1))
if a.out:
    json.dump(res, open(a.out, "w"), indent=1)
