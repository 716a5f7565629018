"""The torch side of `xner bench --gemm`: the same matrix products, in the same layouts, timed
the same way (best of repeated runs over at least SECONDS), in f32 and in bf16 as autocast
runs them (f32 operands cast to bf16, then oneDNN's product; on a CPU with AMX it runs on the
tile unit).

xner runs it once per round and sends the shapes one at a time, timing its own side of each
right after torch's, so that both sides of a shape are measured within the same second (this
VM's speed drifts between minutes). Prints a line `{"torch": VERSION}`, then, for each line of
JSON shape read from stdin, one line of JSON with GFLOP/s per precision; stops at end of input.

    python scripts/bench_gemm.py --threads 2 [--seconds 0.3] < shapes.jsonl
"""
import argparse, json, sys, time
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--seconds", type=float, default=0.3)
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(0)


def operand(rows, cols, transposed, dtype):
    # Stored as the transpose and read through a transposed view, as xner reads it.
    if transposed:
        return (torch.rand(cols, rows) - 0.5).to(dtype).t()
    return (torch.rand(rows, cols) - 0.5).to(dtype)


def best(fn):
    fn()
    start, runs, t_best = time.perf_counter(), 0, float("inf")
    while runs < 3 or time.perf_counter() - start < a.seconds:
        t = time.perf_counter()
        fn()
        t_best = min(t_best, time.perf_counter() - t)
        runs += 1
    return t_best


def timed(s):
    row = {"name": s["name"], "m": s["m"], "k": s["k"], "n": s["n"]}
    flops = 2.0 * s["m"] * s["k"] * s["n"]
    for name in ["f32", "bf16"]:
        x = operand(s["m"], s["k"], s["a_transposed"], torch.float32)
        w = operand(s["k"], s["n"], s["b_transposed"], torch.float32)
        if name == "f32":
            fn = lambda: torch.matmul(x, w)
        elif s["inference"]:
            # Inference under autocast: the weight cast once (autocast's cache), the f32
            # activations cast on each call.
            wb = w.to(torch.bfloat16)
            fn = lambda: torch.matmul(x.to(torch.bfloat16), wb)
        else:
            # Training under autocast: both f32 operands cast on each call.
            fn = lambda: torch.matmul(x.to(torch.bfloat16), w.to(torch.bfloat16))
        row[name] = flops / best(fn) / 1e9
    return row


print(json.dumps({"torch": torch.__version__}), flush=True)
with torch.inference_mode():
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(timed(json.loads(line))), flush=True)
