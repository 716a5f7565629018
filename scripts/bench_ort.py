"""The ONNX Runtime peer of `xner eval --precision ...`: the model directory exported to ONNX,
optimized as optimum's ORTOptimizer does it (onnxruntime.transformers' BERT fusions: attention,
skip-LayerNorm, bias-GELU), and for int8 dynamically quantized as optimum's
`AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)` does it
(`quantize_dynamic`: uint8 activations, int8 weights per channel; MLAS runs it on VNNI or AMX).

It runs exactly the batches `xner eval` runs: the first N sentences of a PAN-X split (the Swiss
sample), aligned as the book aligns them, sorted by subword length (stably, as xner sorts) and cut
into batches of B; each batch is padded to its longest sentence, so padding is a few tokens.
Timed: building each batch's arrays, `session.run`, and the argmax (loading, export, optimization,
quantization and tokenization excluded, as xner's `seconds` excludes loading and tokenizing), after
one untimed warm-up batch. Prints one JSON object: seconds, tokens, F1 (seqeval, first subword of
each word, as `xner eval`), and the process's peak resident memory.

    python scripts/bench_ort.py --model DIR --data ../shared/data/panx --lang de --limit 2000 \
        --variant fp32|int8 --work /tmp/ort --threads 2
"""
import argparse, json, os, resource, time

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--data", required=True)
p.add_argument("--lang", default="de")
p.add_argument("--split", default="test")
p.add_argument("--limit", type=int, default=2000)
p.add_argument("--batch", type=int, default=24)
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--variant", choices=["fp32", "int8"], default="fp32")
p.add_argument("--work", required=True, help="where the exported models are kept between runs")
a = p.parse_args()

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
FRACS = {"de": 0.629, "fr": 0.229, "it": 0.084, "en": 0.059}


def export(model_dir, work):
    """ONNX fp32 (optimized) and int8 files under `work`, made once."""
    raw, fp32, int8 = (os.path.join(work, n) for n in ("model.onnx", "model-opt.onnx", "model-int8.onnx"))
    if os.path.exists(int8):
        return fp32, int8
    os.makedirs(work, exist_ok=True)
    import torch
    from transformers import AutoModelForTokenClassification, AutoConfig
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    torch.onnx.export(model, (ids, torch.ones_like(ids)), raw, input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                    "logits": {0: "batch", 1: "seq"}})
    from onnxruntime.transformers.optimizer import optimize_model
    cfg = AutoConfig.from_pretrained(model_dir)
    optimized = optimize_model(raw, model_type="bert", num_heads=cfg.num_attention_heads,
                               hidden_size=cfg.hidden_size)
    optimized.save_model_to_file(fp32)
    import onnx
    from onnxruntime.quantization import quantize_dynamic, QuantType
    # The fused ops (com.microsoft domain) defeat shape inference: their outputs are float.
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return fp32, int8


fp32_path, int8_path = export(a.model, a.work)

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer
from seqeval.metrics import f1_score

# The Swiss sample as datasets' shuffle(seed=0) draws it (numpy's permutation of the row indices).
sentences, toks, tags = [], [], []
for line in list(open(os.path.join(a.data, a.lang, f"{a.split}.tsv"), encoding="utf-8")) + [""]:
    line = line.rstrip("\n")
    if not line:
        if toks:
            sentences.append((toks, tags))
            toks, tags = [], []
        continue
    w, t = line.split("\t")
    toks.append(w)
    tags.append(t)
from datasets import Dataset
order = Dataset.from_dict({"i": list(range(len(sentences)))}).shuffle(seed=0)["i"]
keep = order[:int(FRACS[a.lang] * len(sentences))][:a.limit]
sentences = [sentences[i] for i in keep]

tok = AutoTokenizer.from_pretrained(a.model)
encoded = []
for words, labels in sentences:
    e = tok(words, is_split_into_words=True)
    first, prev = [], None
    for j, w in enumerate(e.word_ids()):
        if w is not None and w != prev:
            first.append(j)
        prev = w
    encoded.append((e["input_ids"], first, labels))

order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
batches = [order[i:i + a.batch] for i in range(0, len(order), a.batch)]
pad = tok.pad_token_id

options = ort.SessionOptions()
options.intra_op_num_threads = a.threads
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(fp32_path if a.variant == "fp32" else int8_path, options,
                               providers=["CPUExecutionProvider"])


def run(batch):
    width = max(len(encoded[i][0]) for i in batch)
    ids = np.full((len(batch), width), pad, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for r, i in enumerate(batch):
        n = len(encoded[i][0])
        ids[r, :n] = encoded[i][0]
        mask[r, :n] = 1
    logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    return logits.argmax(-1)


run(batches[0])
predicted = {}
start = time.perf_counter()
for batch in batches:
    best = run(batch)
    for r, i in enumerate(batch):
        predicted[i] = best[r]
seconds = time.perf_counter() - start

gold, pred = [], []
for i, (ids, first, labels) in enumerate(encoded):
    gold.append(labels)
    pred.append([TAGS[predicted[i][j]] for j in first])
print(json.dumps({"variant": a.variant, "sentences": len(encoded), "tokens": sum(len(e[0]) for e in encoded),
                  "padded_tokens": sum(len(b) * max(len(encoded[i][0]) for i in b) for b in batches),
                  "seconds": round(seconds, 3), "f1": round(f1_score(gold, pred), 4),
                  "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "onnxruntime": ort.__version__}))
