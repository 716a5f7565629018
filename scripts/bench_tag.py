"""The Python peer of `xner tag --file`: transformers' token-classification pipeline
(aggregation_strategy="simple") over every line of a file, timed around the pipeline call
(tokenization, forward passes, aggregation; loading excluded). Prints JSON.

    python scripts/bench_tag.py --model DIR --file lines.txt --batch 1
"""
import argparse, json, os, time

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--file", required=True)
p.add_argument("--batch", type=int, default=1, help="the pipeline's batch_size (its default is 1)")
p.add_argument("--threads", type=int, default=os.cpu_count())
a = p.parse_args()

import torch
torch.set_num_threads(a.threads)
from transformers import pipeline

lines = open(a.file, encoding="utf-8").read().splitlines()
ner = pipeline("token-classification", model=a.model, aggregation_strategy="simple", device=-1)
t0 = time.time()
out = ner(lines, batch_size=a.batch)
seconds = time.time() - t0
tokens = sum(len(ner.tokenizer(l)["input_ids"]) for l in lines)
print(json.dumps({"lines": len(lines), "tokens": tokens, "entities": sum(len(o) for o in out),
                  "seconds": round(seconds, 2), "batch": a.batch, "torch": torch.__version__}))
