"""The kinds of LLM server llmmon knows, in one table: :data:`KINDS`.

A :class:`ServerKind` is all llmmon needs to know about one sort of server: its id (the ``kind``
of its Health records, the prefix of its ``<kind>@<host>:<port>`` name, ``kind =`` in
config.toml and ``--kind`` of ``main.py proxy``), the name people call it, the port it listens on
by default, the collector that watches it (whose ``recognise`` probe tells it apart during
discovery), the API its clients speak (what the prompt test sends), the tab that shows its own
metrics, and which of its own series stand in for the proxy's figures in the header strip and
the Overview when no traffic goes through the proxy.

Discovery, the proxy, the prompt test, the header strip and the panels read this table; none of
them spells a kind. The order is the probe order: specific kinds first, the generic
OpenAI-compatible kind last (it catches every server that speaks the OpenAI API, and watches a
server whose configured kind is unknown).

Collectors and panels are named by import path (``"module:Class"``), so this table imports
neither: the core stays free of Qt, and ``main.py proxy`` starts without loading collectors.
Adding a kind is one collector module and one line here (docs/architecture.md, "Add a server
kind").

>>> kind_for_port(8080).display_name
'llama.cpp'
>>> server_kind("no-such-kind").id
'openai'
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from enum import StrEnum


class Api(StrEnum):
    """The request dialect a server's clients speak. The proxy's meter reads both (it goes by
    the response's content type); the prompt test sends the kind's own."""

    OLLAMA = "ollama"   # POST /api/chat, NDJSON stream
    OPENAI = "openai"   # POST /v1/chat/completions, SSE stream


@dataclass(frozen=True, slots=True)
class OwnFigures:
    """Series of a kind's own counters (names from docs/metrics.md) that stand in for the
    proxy-measured figures in the header strip and the Overview, and that a session's totals
    are summed from (``app/storage/server_counts.py``); empty when the kind has none."""

    tokens_per_second: str = ""   # tokens generated per second
    requests_active: str = ""     # requests being processed now
    requests_waiting: str = ""    # requests queued for a free slot
    ttft: str = ""                # time to first token, a summary with a ``quantile`` label
    requests_finished_rate: str = ""     # requests finished per second (integrated over a session)
    token_rates: tuple[str, ...] = ()    # prompt and generated tokens per second (integrated)
    token_counters: tuple[str, ...] = ()  # raw prompt and generated token counters (summed by increase)


@dataclass(frozen=True, slots=True)
class ServerKind:
    """One kind of LLM server.

    Attributes:
        id: ``"vllm"``: Health ``kind``, server-name prefix, config and CLI spelling.
        display_name: ``"vLLM"``, what the user reads.
        default_port: where discovery looks on this machine, and how the proxy names an
            upstream of unknown kind on that port; ``None`` for none.
        collector: ``"module:Class"`` of its :class:`~collectors.http.ServerCollector`.
        api: the dialect of its clients' requests.
        panel: ``"module:Class"`` of its own tab (a :class:`~widgets.panel.Panel`), ``""``
            for none.
        figures: its own series that feed the header strip and the Overview.
    """

    id: str
    display_name: str
    default_port: int | None
    collector: str
    api: Api = Api.OPENAI
    panel: str = ""
    figures: OwnFigures = field(default_factory=OwnFigures)


KINDS: tuple[ServerKind, ...] = (
    ServerKind("ollama", "Ollama", 11434, "collectors.ollama:OllamaCollector", Api.OLLAMA),
    ServerKind("vllm", "vLLM", 8000, "collectors.vllm:VllmCollector", panel="widgets.vllm_panel:VllmPanel",
               figures=OwnFigures("vllm_generation_tokens_per_second", "vllm_requests_running",
                                  "vllm_requests_waiting", "vllm_ttft_seconds",
                                  requests_finished_rate="vllm_requests_finished_per_second",
                                  token_rates=("vllm_prompt_tokens_per_second", "vllm_generation_tokens_per_second"))),
    ServerKind("llamacpp", "llama.cpp", 8080, "collectors.llamacpp:LlamaCppCollector",
               panel="widgets.llamacpp_panel:LlamaCppPanel",
               figures=OwnFigures("llamacpp_generation_tokens_per_second", "llamacpp_requests_processing",
                                  "llamacpp_requests_deferred",
                                  token_counters=("llamacpp_prompt_tokens_total", "llamacpp_generation_tokens_total"))),
    # The generic kind, last. 1234 is LM Studio's port (an OpenAI-compatible server).
    ServerKind("openai", "OpenAI-compatible server", 1234, "collectors.vllm:OpenAICompatCollector"),
)
GENERIC = "openai"


def kind_ids() -> list[str]:
    """Every kind's id, in probe order."""
    return [k.id for k in KINDS]


def is_server_kind(kind_id: str) -> bool:
    """Whether a Health record's ``kind`` is an LLM server's (not ``"gpu"``, ``"system"``...)."""
    return any(k.id == kind_id for k in KINDS)


def server_kind(kind_id: str) -> ServerKind:
    """The kind with this id; the generic OpenAI-compatible kind for an id it does not know."""
    by_id = {k.id: k for k in KINDS}
    return by_id.get(kind_id, by_id[GENERIC])


def kind_for_port(port: int) -> ServerKind:
    """The kind whose default port this is (the generic kind for any other port)."""
    return next((k for k in KINDS if k.default_port == port), server_kind(GENERIC))


def own_series(figure: str) -> list[str]:
    """The series names of one :class:`OwnFigures` field (``"tokens_per_second"``...) over every
    kind that reports it, in table order, each name once.

    >>> own_series("token_counters")
    ['llamacpp_prompt_tokens_total', 'llamacpp_generation_tokens_total']
    """
    names: list[str] = []
    for kind in KINDS:
        value = getattr(kind.figures, figure)
        names += [value] if isinstance(value, str) else list(value)
    return list(dict.fromkeys(n for n in names if n))


def where_to_start() -> str:
    """The default ports in words, for messages: ``"Ollama (:11434), vLLM (:8000), ... or
    OpenAI-compatible (:1234)"``."""
    places = [f"{k.display_name} (:{k.default_port})" for k in KINDS if k.default_port is not None]
    return ", ".join(places[:-1]) + " or " + places[-1] if len(places) > 1 else "".join(places)


def load(ref: str) -> object:
    """The object a ``"module:attribute"`` reference names, imported now."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)
