"""Writes tests/fixtures/pipeline/entities.json: transformers' token-classification pipeline on
a small trained model, for every aggregation strategy, on the first 150 sentences of PAN-X de
validation (words joined by spaces; the texts themselves are not stored) and on free text.
tests/pipeline_parity.rs makes the same model again and compares xner's entities with these.

  XNER_PIPELINE_MODEL=/tmp/pm cargo test --release --test pipeline_parity -- --ignored
  python scripts/pipeline_fixtures.py /tmp/pm/model ../shared/data/panx

Needs torch and transformers.
"""
import json, os, sys

import torch
from transformers import AutoModelForTokenClassification, PreTrainedTokenizerFast, pipeline

model_dir, panx = sys.argv[1], sys.argv[2]
out = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "pipeline", "entities.json")
torch.set_num_threads(2)

N = 150
FREE = [
    "Jeff Dean ist ein Informatiker bei Google in Kalifornien.",
    "Angela Merkel besuchte am Montag Paris, London und New York.",
    "Die Deutsche Bahn (DB) fährt von München nach Berlin-Mitte.",
    "«Le Monde» a interviewé Emmanuel Macron à l'Élysée hier soir !",
    "In Reykjavík trafen sich Søren Kierkegaard und Marie Skłodowska-Curie.",
    "E-Mails an info@example.org werden von der UNESCO nicht beantwortet.",
    "   Leerzeichen   am Anfang und    dazwischen   ",
    "Ünïcödé: Zürich, Genève, Ελλάδα, Москва, 東京.",
    "Der FC Bayern München gewann 3:1 gegen Borussia Dortmund.",
    "Barack Obama and Michelle Obama visited the United Nations headquarters.",
]

texts = []
words = []
for line in open(os.path.join(panx, "de", "validation.tsv"), encoding="utf-8"):
    line = line.rstrip("\n")
    if not line:
        if words:
            texts.append(" ".join(words))
            words = []
        if len(texts) == N:
            break
        continue
    words.append(line.split("\t")[0])
texts += FREE

# The model directory's own tokenizer.json, as xner runs it. (transformers 5 rebuilds XLM-R's
# tokenizer with a WhitespaceSplit before Metaspace, whose offsets leave out the space before a
# word; the ids are the same. The aggregation is what this fixture pins, on equal tokens.)
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"), bos_token="<s>", eos_token="</s>",
                              unk_token="<unk>", sep_token="</s>", pad_token="<pad>", cls_token="<s>", mask_token="<mask>")
model = AutoModelForTokenClassification.from_pretrained(model_dir)
entities = {}
for strategy in ["none", "simple", "first", "average", "max"]:
    nlp = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy=strategy, device=-1)
    rows = []
    for text in texts:
        found = []
        for e in nlp(text):
            item = {"label": e.get("entity_group", e.get("entity")), "start": int(e["start"]), "end": int(e["end"]),
                    "score": float(e["score"])}
            if strategy == "none":
                item["index"] = int(e["index"])
            found.append(item)
        rows.append(found)
    entities[strategy] = rows
    print(strategy, sum(len(r) for r in rows), "entities")
import transformers
json.dump({"transformers": transformers.__version__, "panx_sentences": N, "free_texts": FREE, "entities": entities},
          open(out, "w", encoding="utf-8"), ensure_ascii=False)
