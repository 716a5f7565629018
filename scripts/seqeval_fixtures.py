"""Writes seqeval parity fixtures for xner's `metrics` module.

Each fixture is a `token gold pred` file (blank line between sentences) under
tests/fixtures/seqeval/, and expected.json holds what seqeval 1.2 computes on it:
`classification_report(..., output_dict=True)` in default mode and in strict IOB2 mode, plus
`f1_score`. Hand-written cases cover ill-formed sequences (I- after O, type changes inside a
span, entities at sentence ends, single-token sentences); seeded random cases cover the rest.

    python scripts/seqeval_fixtures.py        # needs: pip install seqeval
"""
import json, os, random
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "seqeval")

HAND = {
    "i_after_o": ([["O", "I-PER", "I-PER", "O"], ["I-LOC"]],
                  [["O", "B-PER", "I-PER", "O"], ["B-LOC"]]),
    "type_change_inside_span": ([["B-ORG", "I-ORG", "I-LOC", "I-LOC", "O"]],
                                [["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O"]]),
    "entities_at_sentence_ends": ([["B-PER"], ["O", "B-LOC", "I-LOC"], ["B-ORG", "I-ORG"]],
                                  [["B-PER"], ["O", "B-LOC", "B-LOC"], ["I-ORG", "I-ORG"]]),
    "b_then_i_of_other_type": ([["B-PER", "I-ORG", "O", "B-LOC"]],
                               [["B-PER", "I-PER", "O", "B-LOC"]]),
    "no_predictions": ([["B-PER", "I-PER", "O"], ["B-ORG"]],
                       [["O", "O", "O"], ["O"]]),
    "spurious_only": ([["O", "O", "O"], ["O", "B-LOC"]],
                      [["B-MISC", "O", "I-MISC"], ["O", "B-LOC"]]),
    "adjacent_b_tags": ([["B-LOC", "B-LOC", "I-LOC", "B-LOC"]],
                        [["B-LOC", "I-LOC", "I-LOC", "B-LOC"]]),
}

TAGS = ["O", "O", "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

def random_case(rng):
    gold, pred = [], []
    for _ in range(rng.randint(1, 25)):
        n = rng.randint(1, 18)
        g = [rng.choice(TAGS) for _ in range(n)]
        p = [t if rng.random() > 0.3 else rng.choice(TAGS) for t in g]
        gold.append(g); pred.append(p)
    return gold, pred

def number(x):
    # seqeval's macro average over no entity type at all is NaN (numpy's mean of nothing);
    # JSON has no NaN, so it is written as null (as serde_json writes xner's NaN).
    return None if x != x else float(x)

def scores(gold, pred, **kw):
    rep = classification_report(gold, pred, output_dict=True, **kw)
    return {k: {m: number(v[m]) if m != "support" else int(v[m])
                for m in ("precision", "recall", "f1-score", "support")} for k, v in rep.items()}

def main():
    rng = random.Random(1234)
    cases = dict(HAND)
    for i in range(40):
        cases[f"random_{i:02d}"] = random_case(rng)
    expected = {}
    for name, (gold, pred) in cases.items():
        with open(os.path.join(OUT, f"{name}.txt"), "w") as f:
            for si, (g, p) in enumerate(zip(gold, pred)):
                for ti, (gt, pt) in enumerate(zip(g, p)):
                    f.write(f"w{si}_{ti} {gt} {pt}\n")
                f.write("\n")
        expected[name] = {
            "default": scores(gold, pred),
            "strict": scores(gold, pred, mode="strict", scheme=IOB2),
            "f1_default": float(f1_score(gold, pred)),
            "f1_strict": float(f1_score(gold, pred, mode="strict", scheme=IOB2)),
        }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True, allow_nan=False)
    print(f"wrote {len(cases)} fixtures to {OUT}")

if __name__ == "__main__":
    main()
