"""Tag a sharded corpus on a Ray cluster, with xner (the Python wheel) as the worker.

Each input shard is JSON Lines or Parquet with an `id` column (any integer or string key the
output should carry) and a `text` column. Ray Data streams the shards through a pool of
actors, each holding one loaded model (`map_batches` with a callable class), and writes the
entities as Parquet shards: one row per input row with `id`, `text` and `entities`
(list of {label, text, start, end, score}, as `xner tag --json` and `xner.Tagger.tag` give).

A crashed or killed actor is restarted by Ray and its batch retried (Ray Data's actor pools
default to `max_restarts=-1, max_task_retries=-1`); a batch's output is written only once
its task completes, so no row is lost and none is written twice.

    pip install ./python 'ray[data]' pyarrow
    ray start --head --node-ip-address 127.0.0.1          # or an existing cluster
    python examples/ray_tag.py --address auto --model models/panx-de \
        --input 'shards/*.jsonl' --output tagged/ --actors 2

Without --address, Ray starts a local cluster for the run.
"""

import argparse
import glob
import os
import sys
import time

import pyarrow as pa

ENTITY = pa.struct(
    [("label", pa.string()), ("text", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float32())]
)


class XnerTagger:
    """One loaded model per actor; called with a batch of rows as an Arrow table."""

    def __init__(self, model_dir: str, precision: str, aggregation: str, threads: int):
        # Before xner's first parallel work: its thread pool then takes this size (the actor's
        # CPUs), so that actors sharing a machine do not oversubscribe its cores.
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        import xner

        self.tagger = xner.Tagger(model_dir, precision=precision, aggregation=aggregation)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        entities = self.tagger.tag(texts)
        return pa.table(
            {
                "id": batch.column("id"),
                "text": batch.column("text"),
                "entities": pa.array(entities, type=pa.list_(ENTITY)),
            }
        )


def read_shards(ray, pattern: str):
    paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not paths:
        sys.exit(f"error: no input matches {pattern!r}")
    parquet = [p for p in paths if p.endswith(".parquet")]
    if parquet and len(parquet) != len(paths):
        sys.exit("error: mix of Parquet and JSON Lines inputs; tag them in two runs")
    if parquet:
        return ray.data.read_parquet(paths)
    return ray.data.read_json(paths, lines=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory (or hub id) with a token-classification head")
    parser.add_argument("--input", required=True, help="a shard, a directory or a glob of JSON Lines/Parquet shards")
    parser.add_argument("--output", required=True, help="directory for the output Parquet shards")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    parser.add_argument("--actors", type=int, default=2, help="actors, each with one loaded model")
    parser.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs each actor reserves (and its threads)")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per call of an actor")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16", "int8"])
    parser.add_argument("--aggregation", default="simple", choices=["words", "none", "simple", "first", "average", "max"])
    args = parser.parse_args()
    if args.actors < 1 or args.cpus_per_actor < 1 or args.batch_size < 1:
        sys.exit("error: --actors, --cpus-per-actor and --batch-size must be at least 1")
    if not os.path.exists(os.path.join(args.model, "config.json")) and os.path.sep in args.model:
        sys.exit(f"error: {args.model}: not a model directory (no config.json)")

    import ray

    ray.init(address=args.address, include_dashboard=False, log_to_driver=True)
    pattern = os.path.join(args.input, "*") if os.path.isdir(args.input) else args.input
    rows = read_shards(ray, pattern)
    start = time.perf_counter()
    tagged = rows.map_batches(
        XnerTagger,
        fn_constructor_args=(os.path.abspath(args.model), args.precision, args.aggregation, args.cpus_per_actor),
        batch_size=args.batch_size,
        batch_format="pyarrow",
        concurrency=args.actors,
        num_cpus=args.cpus_per_actor,
    )
    tagged.write_parquet(args.output)
    seconds = time.perf_counter() - start
    count = ray.data.read_parquet(args.output).count()
    print(f"tagged {count} documents in {seconds:.1f} s ({count / seconds:.0f} documents/s) with "
          f"{args.actors} actors into {args.output}")


if __name__ == "__main__":
    main()
