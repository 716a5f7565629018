"""The Python peer of `xner bench`: the same batches through transformers + PyTorch, timed the
same way — per batch a training step (forward, backward, clip_grad_norm_ + the Trainer's
default fused AdamW), after one untimed warm-up step on the first batch, then per batch an
inference pass (eval mode, no_grad) — and summed. Batches come from xner as JSON (unpadded ids
and labels per sentence); they are padded here as transformers' DataCollatorForTokenClassification
pads them. Prints one JSON object, with the process's peak resident memory (and on a GPU,
torch's peak allocated GPU memory). On a GPU each phase waits for the device (synchronize), as
xner's timing does.

    python scripts/bench_torch.py --model DIR --batches batches.json --threads 2 [--device cuda]
"""
import argparse, json, resource, sys, time
import torch
from transformers import AutoConfig, AutoModelForTokenClassification

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batches", required=True)
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--device", default="cpu")
a = ap.parse_args()
device = torch.device(a.device)
gpu = device.type == "cuda"


def sync():
    if gpu:
        torch.cuda.synchronize(device)


if a.threads:
    torch.set_num_threads(a.threads)
tags = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
cfg = AutoConfig.from_pretrained(a.model, num_labels=7, id2label=dict(enumerate(tags)),
                                 label2id={t: i for i, t in enumerate(tags)})
model = AutoModelForTokenClassification.from_pretrained(a.model, config=cfg).to(device)
model.train()
decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
try:
    opt = torch.optim.AdamW(groups, lr=1e-5, fused=True)
except (RuntimeError, TypeError):
    opt = torch.optim.AdamW(groups, lr=1e-5)


def padded(batch):
    width = max(len(r) for r in batch["input_ids"])
    pad = cfg.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch["input_ids"]])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in batch["labels"]])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch["input_ids"]])
    return ids.to(device), mask.to(device), labels.to(device)


batches = [padded(b) for b in json.load(open(a.batches))]
if not batches:
    sys.exit("no batches")
totals = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "inference": 0.0}
tokens = padded_tokens = 0
for k, (ids, mask, labels) in enumerate([batches[0]] + batches):
    sync()
    t0 = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    sync()
    t1 = time.perf_counter()
    loss.backward()
    sync()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    t3 = time.perf_counter()
    if k > 0:  # the first is the warm-up
        for name, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2)):
            totals[name] += dt
        tokens += int(mask.sum())
        padded_tokens += mask.numel()
model.eval()
with torch.no_grad():
    for ids, mask, labels in batches:
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask).logits.sum().item()
        totals["inference"] += time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
extra = {"gpu_peak_bytes": torch.cuda.max_memory_allocated(device), "gpu": torch.cuda.get_device_name(device)} if gpu else {}
print(json.dumps({**totals, "steps": len(batches), "tokens": tokens, "padded_tokens": padded_tokens,
                  "peak_bytes": peak, "torch": torch.__version__, "device": a.device, **extra}))
