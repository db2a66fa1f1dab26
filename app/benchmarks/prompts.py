"""Prompt sets for benchmarks: the prompts a benchmark repeats, read from a file or the panel.

Two file forms:

* plain text: prompts separated by a line holding only ``---``; leading and trailing blank
  lines of each prompt are dropped, empty prompts are skipped;
* ``.jsonl``: one JSON value per line, either a string (the prompt) or an object with
  ``"prompt"`` and optionally ``"system"``; blank lines are skipped.

A file that yields no prompt, a line that is not valid JSON, or an object without a text
``prompt`` raises :class:`PromptFileError` naming the line.

>>> [p.prompt for p in parse_prompts("Why is the sky blue?\\n---\\nWrite a haiku.\\n")]
['Why is the sky blue?', 'Write a haiku.']
>>> parse_prompts('{"prompt": "hi", "system": "be brief"}', jsonl=True)[0].system
'be brief'
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SEPARATOR = "---"
MAX_BYTES = 16 * 1024 * 1024


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class BenchPrompt:
    prompt: str
    system: str = ""


def parse_prompts(text: str, *, jsonl: bool = False, source: str = "prompts") -> list[BenchPrompt]:
    """The prompts of a prompt-set text (see the module's description of both forms)."""
    prompts = _parse_jsonl(text, source) if jsonl else _parse_text(text)
    if not prompts:
        raise PromptFileError(f"{source}: no prompt found (separate prompts with a line '---'"
                              f"{'' if jsonl else ', or use a .jsonl file'})")
    return prompts


def _parse_text(text: str) -> list[BenchPrompt]:
    out: list[BenchPrompt] = []
    current: list[str] = []
    for line in [*text.splitlines(), SEPARATOR]:
        if line.strip() == SEPARATOR:
            prompt = "\n".join(current).strip("\n")
            if prompt.strip():
                out.append(BenchPrompt(prompt))
            current = []
        else:
            current.append(line)
    return out


def _parse_jsonl(text: str, source: str) -> list[BenchPrompt]:
    out: list[BenchPrompt] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise PromptFileError(f"{source} line {number}: not JSON ({exc})"[:300]) from None
        if isinstance(value, str):
            value = {"prompt": value}
        if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
            raise PromptFileError(f'{source} line {number}: expected a text or an object with a "prompt" text')
        system = value.get("system", "")
        if not isinstance(system, str):
            raise PromptFileError(f'{source} line {number}: "system" must be a text')
        if value["prompt"].strip():
            out.append(BenchPrompt(value["prompt"], system))
    return out


def read_prompt_file(path: Path) -> list[BenchPrompt]:
    """The prompts of a file (``.jsonl`` by its name, plain text otherwise)."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise PromptFileError(f"{path}: larger than {MAX_BYTES // 2**20} MB; is it the right file?")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PromptFileError(f"{path}: {exc.strerror or exc}") from None
    return parse_prompts(text, jsonl=path.suffix.lower() == ".jsonl", source=str(path))
