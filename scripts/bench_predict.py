"""The Python peer of `xner eval`: transformers' Trainer.predict, as ref_panx.py (the book's
pipeline) evaluates, on the first N sentences of a PAN-X split (the Swiss sample: shuffle(seed=0),
then the language's fraction). Prints JSON: predict seconds (the model's forward passes, the
collator's padding and the gathering of logits; loading and tokenizing excluded, as in
ref_panx.py), subword tokens, and seqeval F1 — the same F1 `xner eval` must print.

    python scripts/bench_predict.py --model DIR --data ../shared/data/panx --lang de --limit 2000
"""
import argparse, json, os, time

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--data", required=True)
p.add_argument("--lang", default="de")
p.add_argument("--split", default="test")
p.add_argument("--limit", type=int, default=2000)
p.add_argument("--batch", type=int, default=24)
p.add_argument("--threads", type=int, default=os.cpu_count())
a = p.parse_args()

import numpy as np
import torch
torch.set_num_threads(a.threads)
from datasets import Dataset, Features, Sequence, Value, ClassLabel
from transformers import AutoTokenizer, AutoModelForTokenClassification, TrainingArguments, Trainer, \
    DataCollatorForTokenClassification
from seqeval.metrics import f1_score

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
FRACS = {"de": 0.629, "fr": 0.229, "it": 0.084, "en": 0.059}
feats = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=TAGS))})

rows = {"tokens": [], "ner_tags": []}
toks, tags = [], []
for line in list(open(os.path.join(a.data, a.lang, f"{a.split}.tsv"), encoding="utf-8")) + [""]:
    line = line.rstrip("\n")
    if not line:
        if toks:
            rows["tokens"].append(toks); rows["ner_tags"].append([TAGS.index(t) for t in tags]); toks, tags = [], []
        continue
    w, t = line.split("\t"); toks.append(w); tags.append(t)
ds = Dataset.from_dict(rows, features=feats)
ds = ds.shuffle(seed=0).select(range(int(FRACS[a.lang] * ds.num_rows)))
ds = ds.select(range(min(a.limit, ds.num_rows)))

tok = AutoTokenizer.from_pretrained(a.model)
def align(examples):
    ti = tok(examples["tokens"], truncation=True, is_split_into_words=True)
    labels = []
    for i, label in enumerate(examples["ner_tags"]):
        prev, ids = None, []
        for w in ti.word_ids(batch_index=i):
            ids.append(-100 if w is None or w == prev else label[w]); prev = w
        labels.append(ids)
    ti["labels"] = labels
    return ti
enc = ds.map(align, batched=True, remove_columns=["ner_tags", "tokens"])

model = AutoModelForTokenClassification.from_pretrained(a.model)
args = TrainingArguments(output_dir="/tmp/bench_predict_out", log_level="error", per_device_eval_batch_size=a.batch,
    report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
trainer = Trainer(model=model, args=args, data_collator=DataCollatorForTokenClassification(tok))
t0 = time.time(); out = trainer.predict(enc); seconds = time.time() - t0
preds = np.argmax(out.predictions, axis=2)
yt, yp = [], []
for b in range(preds.shape[0]):
    keep = out.label_ids[b] != -100
    yt.append([TAGS[i] for i in out.label_ids[b][keep]]); yp.append([TAGS[i] for i in preds[b][keep]])
lens = [len(x) for x in enc["input_ids"]]
# The collator pads each batch (in dataset order) to its longest sentence.
slots = sum(max(lens[i:i + a.batch]) * len(lens[i:i + a.batch]) for i in range(0, len(lens), a.batch))
print(json.dumps({"sentences": enc.num_rows, "tokens": sum(lens), "padded_tokens": slots,
                  "seconds": round(seconds, 2), "f1": round(f1_score(yt, yp), 4), "torch": torch.__version__}))
