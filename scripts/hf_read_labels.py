"""Reads model directories written by `xner train` with transformers and records the label set
it sees there (`id2label` of `AutoConfig`, and the head size of the loaded
`AutoModelForTokenClassification`), as tests/fixtures/corpus/hf_labels.json.

  python scripts/hf_read_labels.py OUT.json NAME=MODEL_DIR [NAME=MODEL_DIR ...]

tests/corpus_files.rs trains the same models again and checks that their config.json holds
these labels in this order. Needs torch and transformers.
"""
import json, sys

from transformers import AutoConfig, AutoModelForTokenClassification

out = {}
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    assert model.classifier.out_features == len(labels)
    assert all(config.label2id[l] == i for i, l in enumerate(labels))
    out[name] = {"labels": labels, "architecture": type(model).__name__}
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out, indent=1))
