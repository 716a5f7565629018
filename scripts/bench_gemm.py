"""The torch side of `xner bench --gemm`: the same matrix products, in the same layouts, timed
the same way (best of repeated runs over at least SECONDS), in f32 and in bf16 (oneDNN; on a
CPU with AMX its bf16 products run on the tile unit). Reads the shapes xner wrote as JSON;
prints one JSON object with GFLOP/s per shape and precision.

    python scripts/bench_gemm.py SHAPES.json --threads 2 [--seconds 0.3]
"""
import argparse, json, time
import torch

ap = argparse.ArgumentParser()
ap.add_argument("shapes")
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


out = []
with torch.inference_mode():
    for s in json.load(open(a.shapes)):
        row = {"name": s["name"], "m": s["m"], "k": s["k"], "n": s["n"]}
        flops = 2.0 * s["m"] * s["k"] * s["n"]
        for name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
            if name != "f32" and not s["inference"]:
                continue
            x = operand(s["m"], s["k"], s["a_transposed"], dtype)
            w = operand(s["k"], s["n"], s["b_transposed"], dtype)
            if name == "f32" or not s["inference"]:
                fn = lambda: torch.matmul(x, w)
            else:
                # What autocast runs for a Linear: f32 activations cast to bf16, then the product.
                xf = x.float()
                fn = lambda: torch.matmul(xf.to(torch.bfloat16), w)
            row[name] = flops / best(fn) / 1e9
        out.append(row)
print(json.dumps({"torch": torch.__version__, "shapes": out}))
