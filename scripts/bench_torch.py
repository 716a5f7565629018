"""The Python peer of `xner bench`: the same synthetic training step through transformers +
PyTorch (forward, backward, clip_grad_norm_ + the Trainer's default fused AdamW) and the same
inference, timed the same way (median of N steps after one warm-up). Prints one JSON object.

    python scripts/bench_torch.py --model DIR --batch-size 24 --seq-len 32 --steps 3 --threads 2
"""
import argparse, json, time
import torch
from transformers import AutoConfig, AutoModelForTokenClassification

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch-size", type=int, default=24)
ap.add_argument("--seq-len", type=int, default=32)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--threads", type=int, default=0)
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
tags = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
cfg = AutoConfig.from_pretrained(a.model, num_labels=7, id2label=dict(enumerate(tags)),
                                 label2id={t: i for i, t in enumerate(tags)})
model = AutoModelForTokenClassification.from_pretrained(a.model, config=cfg)
model.train()
decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
try:
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-5, fused=True)
except (RuntimeError, TypeError):
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-5)
g = torch.Generator().manual_seed(0)
samples = []
for step in range(a.steps + 1):
    ids = torch.randint(5, cfg.vocab_size, (a.batch_size, a.seq_len), generator=g)
    labels = torch.randint(0, 7, (a.batch_size, a.seq_len), generator=g)
    mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask).logits.sum().item()
    t4 = time.perf_counter()
    model.train()
    if step > 0:
        samples.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
med = lambda i: sorted(s[i] for s in samples)[len(samples) // 2]
print(json.dumps({"forward": med(0), "backward": med(1), "optimizer": med(2), "inference": med(3),
                  "tokens": a.batch_size * a.seq_len, "torch": torch.__version__}))
