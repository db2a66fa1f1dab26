"""The real llama.cpp server itself, before llmmon gets involved: our tiny model loads, and the
official OpenAI client gets genuine, reproducible answers from it."""
from __future__ import annotations

from pathlib import Path

import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.real_server.llama_server import ALIAS, LlamaServer
from tests.real_server.tiny_gguf import write_tiny_gguf

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello world, say something long"}]


def test_the_tiny_model_is_the_same_file_every_time(tmp_path: Path, tiny_model: Path) -> None:
    again = write_tiny_gguf(tmp_path / "again.gguf")
    other_seed = write_tiny_gguf(tmp_path / "other.gguf", seed=99)
    assert again.read_bytes() == tiny_model.read_bytes()
    assert other_seed.read_bytes() != tiny_model.read_bytes()
    assert tiny_model.stat().st_size < 2_000_000


def test_real_server_answers_a_chat_completion_reproducibly(llama_server: LlamaServer) -> None:
    client = openai.OpenAI(base_url=f"{llama_server.base_url}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == [ALIAS]

    first = client.chat.completions.create(model=ALIAS, messages=PROMPT, max_tokens=24,
                                           temperature=0, seed=7)
    second = client.chat.completions.create(model=ALIAS, messages=PROMPT, max_tokens=24,
                                            temperature=0, seed=7)
    assert first.choices[0].message.content
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].finish_reason == "length"
    assert first.usage.completion_tokens == 24
    timings = first.model_extra["timings"]  # llama.cpp's own figures, next to usage
    assert timings["predicted_n"] == 24
    assert timings["predicted_per_second"] > 0

    streamed = "".join(chunk.choices[0].delta.content or ""
                       for chunk in client.chat.completions.create(
                           model=ALIAS, messages=PROMPT, max_tokens=24, temperature=0, seed=7,
                           stream=True)
                       if chunk.choices)
    assert streamed == first.choices[0].message.content
