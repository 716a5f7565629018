"""The Python peer of `xner serve`: transformers' token-classification pipeline behind FastAPI
and uvicorn, as a Python user writes it, with the same request and answer shapes
(`POST /v1/ner` with {"text": ...} or {"texts": [...]}; entities with label, start, end, score).

  python scripts/serve_peer.py MODEL_DIR [--port 8090] [--aggregation first] [--threads 2]

Loopback only. Needs torch, transformers, fastapi and uvicorn.
"""
import argparse

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--port", type=int, default=8090)
p.add_argument("--aggregation", default="first")
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)

tokenizer = AutoTokenizer.from_pretrained(a.model)
model = AutoModelForTokenClassification.from_pretrained(a.model)
ner = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy=a.aggregation, device=-1)
app = FastAPI()


class Request(BaseModel):
    text: str | None = None
    texts: list[str] | None = None


def entities(found):
    return [{"label": e.get("entity_group", e.get("entity")), "start": int(e["start"]), "end": int(e["end"]),
             "score": float(e["score"])} for e in found]


@app.post("/v1/ner")
def tag(req: Request):
    if req.text is not None:
        return {"entities": entities(ner(req.text))}
    if not req.texts:
        raise HTTPException(400, "no text")
    return {"results": [{"entities": entities(r)} for r in ner(req.texts)]}


@app.get("/health")
def health():
    return {"status": "ready"}


uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")
