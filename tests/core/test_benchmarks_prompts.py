"""Prompt sets: both file forms read back what was written, and any text or bytes either give
prompts or a PromptFileError that names the file and line — never another exception."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.benchmarks.prompts import SEPARATOR, PromptFileError, parse_prompts, read_prompt_file

# A prompt: text whose lines are not the separator, with no blank first or last line.
prompt_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                      min_size=1, max_size=80).filter(
    lambda t: t.strip() and all(line.strip() != SEPARATOR for line in t.split("\n"))
    and t.split("\n")[0].strip() and t.split("\n")[-1].strip())


@settings(max_examples=80, deadline=None)
@given(st.lists(prompt_text, min_size=1, max_size=6))
def test_a_text_prompt_set_reads_back_its_prompts(prompts: list[str]) -> None:
    text = f"\n{SEPARATOR}\n".join(prompts) + "\n"
    assert [p.prompt for p in parse_prompts(text)] == prompts


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=60).filter(str.strip), st.text(max_size=20)), min_size=1, max_size=6))
def test_a_jsonl_prompt_set_reads_back_prompts_and_system_prompts(pairs: list[tuple[str, str]]) -> None:
    text = "\n".join(json.dumps({"prompt": p, "system": s}) for p, s in pairs)
    assert [(p.prompt, p.system) for p in parse_prompts(text, jsonl=True)] == pairs


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300), st.booleans())
def test_any_text_gives_prompts_or_a_clear_error(text: str, jsonl: bool) -> None:
    try:
        prompts = parse_prompts(text, jsonl=jsonl, source="set.txt")
    except PromptFileError as exc:
        assert str(exc).startswith("set.txt")
    else:
        assert prompts and all(p.prompt.strip() for p in prompts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from(["set.txt", "set.jsonl"]))
def test_any_file_gives_prompts_or_an_error_naming_it(tmp_path: Path, data: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        read_prompt_file(path)
    except PromptFileError as exc:
        assert str(path) in str(exc)


def test_errors_name_the_line_and_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match=r"set.jsonl line 2: not JSON"):
        parse_prompts('"fine"\n{"prompt": broken\n', jsonl=True, source="set.jsonl")
    with pytest.raises(PromptFileError, match=r"line 1: expected a text or an object"):
        parse_prompts('{"text": "no prompt key"}', jsonl=True, source="set.jsonl")
    with pytest.raises(PromptFileError, match="no prompt found"):
        parse_prompts("\n---\n   \n---\n")
    with pytest.raises(PromptFileError, match="No such file"):
        read_prompt_file(tmp_path / "missing.txt")
