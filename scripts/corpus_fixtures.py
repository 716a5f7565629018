"""Writes tests/fixtures/corpus/: a small made-up NER corpus as Hugging Face `datasets` writes
it to Parquet (ClassLabel tags, names in the file's metadata), the same corpus as JSON Lines
with string tags, two malformed Parquet files, and transformers' label alignment of every
sentence (`word_ids()`, run_ner.py's first-subword and `label_all_tokens` rules) for the XLM-R
tokenizer. tests/corpus_files.rs reads them; CI needs no Python.

  python scripts/corpus_fixtures.py XLMR_TOKENIZER_JSON [OUT_DIR]

Needs `datasets` (with pyarrow) and `transformers`.
"""
import json, os, random, sys

from datasets import ClassLabel, Dataset, Features, List, Value
from transformers import PreTrainedTokenizerFast

tokenizer_json = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "corpus")
os.makedirs(out, exist_ok=True)

# Not alphabetical on purpose: a ClassLabel's order is the model's label order.
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
PEOPLE = [["Angela", "Merkel"], ["Jeff", "Dean"], ["Marie", "Skłodowska-Curie"], ["Søren", "Kierkegaard"], ["Ada"]]
ORGS = [["Siemens"], ["Deutsche", "Bahn"], ["Google"], ["Organisation", "mondiale", "de", "la", "santé"]]
PLACES = [["München"], ["New", "York"], ["Kalifornien"], ["Reykjavík"], ["Val", "d'Aosta"]]
MISC = [["Olympischen", "Spiele"], ["Deutsch"], ["Nobelpreis"]]
TEMPLATES = [
    "{PER} arbeitet bei {ORG} in {LOC} .",
    "{PER} besuchte {LOC} während der {MISC} .",
    "Laut {ORG} spricht {PER} fließend {MISC} .",
    "{LOC} liegt weit von {LOC} entfernt .",
    "Heute regnet es .",
    "{ORG} und {ORG} eröffnen ein Büro in {LOC} , sagte {PER} .",
]
rng = random.Random(2026)


def fill(template):
    words, tags = [], []
    for part in template.split():
        if part.startswith("{"):
            kind = part.strip("{}")
            pool = {"PER": PEOPLE, "ORG": ORGS, "LOC": PLACES, "MISC": MISC}[kind]
            entity = rng.choice(pool)
            words += entity
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        else:
            words.append(part)
            tags.append("O")
    return words, tags


sentences = [fill(TEMPLATES[i % len(TEMPLATES)]) for i in range(48)]
features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=LABELS))})
ds = Dataset.from_dict({"tokens": [w for w, _ in sentences], "ner_tags": [[LABELS.index(t) for t in tags] for _, tags in sentences]},
                       features=features)
ds.to_parquet(os.path.join(out, "made_up.parquet"))
with open(os.path.join(out, "made_up.jsonl"), "w", encoding="utf-8") as f:
    for words, tags in sentences:
        f.write(json.dumps({"tokens": words, "ner_tags": tags}, ensure_ascii=False) + "\n")

Dataset.from_dict({"tokens": [["a", "b"]], "labels": [[0, 0]]}).to_parquet(os.path.join(out, "no_ner_tags.parquet"))
Dataset.from_dict({"tokens": [["a", "b"], ["c", "d", "e"]], "ner_tags": [["O", "O"], ["O", "B-PER"]]}).to_parquet(
    os.path.join(out, "ragged.parquet"))

# transformers' alignment (run_ner.py): first subword labelled, the rest -100, or with
# label_all_tokens the rest get b_to_i_label of the word's label.
tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json)
b_to_i = [LABELS.index("I-" + l[2:]) if l.startswith("B-") and "I-" + l[2:] in LABELS else i for i, l in enumerate(LABELS)]
aligned = []
for words, tags in sentences:
    enc = tok(words, is_split_into_words=True)
    first, every, prev = [], [], None
    for w in enc.word_ids():
        if w is None:
            first.append(-100); every.append(-100)
        elif w != prev:
            first.append(LABELS.index(tags[w])); every.append(LABELS.index(tags[w]))
        else:
            first.append(-100); every.append(b_to_i[LABELS.index(tags[w])])
        prev = w
    aligned.append({"input_ids": enc["input_ids"], "word_ids": enc.word_ids(), "first_subword": first, "all_subwords": every})
with open(os.path.join(out, "alignment.json"), "w", encoding="utf-8") as f:
    json.dump({"labels": LABELS, "sentences": aligned}, f)
print(f"wrote {len(sentences)} sentences to {out}")
