"""Property tests of the meter and of the byte-stream readers under it (hypothesis): whatever a
server sends — any bytes, any chunking, any numbers in its counts and timings — no exception
escapes, the meter's own safety net is never needed, and what it records is exact or absent.

The valid streams are the recorded real answers of ``tests/sim/recordings/streams/`` (copied
unchanged from the project's own recordings, see the README there).
"""
from __future__ import annotations

import gzip
import json
import logging
import math
import zlib
from collections.abc import Iterator
from dataclasses import astuple, fields

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.proxy.lines import LineSplitter
from app.proxy.meter import MAX_RATE, MAX_TOKENS, Meter
from app.proxy.request_body import UsageStripper
from app.records import RequestRecord
from tests.sim.upstream import RECORDINGS, with_fields
from tests.support.proxy import json_chunks

CONTENT_TYPES = {".ndjson": "application/x-ndjson", ".sse": "text/event-stream", ".json": "application/json"}
STREAMS = sorted(p.name for p in RECORDINGS.iterdir() if p.suffix in CONTENT_TYPES and "models" not in p.name)
TIMING_FIELDS = {"ttft_s", "latency_s", "itl_mean_s", "itl_p50_s", "itl_p99_s", "itl_max_s", "client_tokens_per_s"}
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class SafetyNet(logging.Handler):
    """Catches the meter's "failed on a response" log: the catch-all that keeps one bad chunk
    from costing the request. A property holds only if the meter never needed it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.faults: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "failed on a response" in record.msg:
            self.faults.append(record.getMessage() + repr(record.exc_info))


@pytest.fixture(scope="module")
def safety_net() -> Iterator[SafetyNet]:
    handler = SafetyNet()
    logger = logging.getLogger("app.proxy.meter")
    logger.addHandler(handler)
    old, logger.level = logger.level, logging.DEBUG
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def meter_record(chunks: list[bytes], content_type: str, encoding: str = "",
                 times: list[float] | None = None) -> RequestRecord:
    rec = RequestRecord(ts_start=0.0, server="sim", endpoint="/x", status=200)
    meter = Meter(rec, 0.0, content_type, encoding)
    for i, chunk in enumerate(chunks):
        meter.feed(chunk, times[i] if times else 1.0)
    return meter.finish((times[-1] if times else 1.0) + 1.0)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def assert_sane(rec: RequestRecord, fed: int) -> None:
    """What any record must look like, whatever was fed."""
    assert rec.bytes_out == fed
    for count in (rec.prompt_tokens, rec.completion_tokens):
        assert count is None or (isinstance(count, int) and 0 <= count <= 2 * MAX_TOKENS)
    for speed in (rec.server_tokens_per_s, rec.client_tokens_per_s, rec.prompt_tokens_per_s):
        assert speed is None or (math.isfinite(speed) and 0 < speed <= MAX_RATE)
    for seconds in (rec.ttft_s, rec.latency_s, rec.itl_mean_s, rec.itl_p50_s, rec.itl_p99_s, rec.itl_max_s,
                    rec.load_s):
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    if rec.itl_max_s is not None:
        assert rec.itl_p50_s <= rec.itl_p99_s <= rec.itl_max_s


# ---------------------------------------------------------------- any bytes
@EXAMPLES
@given(framing=st.sampled_from(sorted(CONTENT_TYPES.values())),
       encoding=st.sampled_from(["", "gzip", "deflate", "br"]),
       chunks=st.lists(st.binary(max_size=300) | st.sampled_from([b"\n", b"\n\n", b"data: ", b"{", b'"done":true']),
                       max_size=30))
@example(framing="application/json", encoding="", chunks=[b"[" * 100_000 + b"]" * 100_000])
@example(framing="application/x-ndjson", encoding="", chunks=[b'{"a":' * 50_000 + b"\n"])
@example(framing="text/event-stream", encoding="", chunks=[b"data: " + b"[" * 100_000 + b"\n\n"])
@example(framing="application/json", encoding="gzip", chunks=[gzip.compress(b"{" * 10)[:7], b"\x00" * 40])
def test_any_bytes_never_raise(safety_net: SafetyNet, framing: str, encoding: str, chunks: list[bytes]) -> None:
    rec = meter_record(chunks, framing, encoding, times=[float(i) for i in range(len(chunks))])
    assert_sane(rec, sum(map(len, chunks)))
    assert safety_net.faults == []


# ---------------------------------------------------------------- any chunking of a valid stream
@EXAMPLES
@given(name=st.sampled_from(STREAMS), points=st.lists(st.integers(min_value=0), max_size=40),
       encoding=st.sampled_from(["", "gzip", "deflate"]))
def test_chunking_never_changes_the_result(safety_net: SafetyNet, name: str, points: list[int], encoding: str) -> None:
    data = (RECORDINGS / name).read_bytes()
    if encoding == "gzip":
        data = gzip.compress(data)
    elif encoding == "deflate":
        data = zlib.compress(data)
    content_type = CONTENT_TYPES["." + name.rsplit(".", 1)[1]]
    whole = meter_record([data], content_type, encoding)
    chunks = cut(data, points)
    # Same clock for every chunk: every field must match, timings included.
    assert astuple(meter_record(chunks, content_type, encoding)) == astuple(whole)
    # A clock that moves with each chunk: what the server said must not move with it.
    moving = meter_record(chunks, content_type, encoding, times=[0.5 * i for i in range(len(chunks))])
    assert {f.name: getattr(moving, f.name) for f in fields(moving) if f.name not in TIMING_FIELDS} == {
        f.name: getattr(whole, f.name) for f in fields(whole) if f.name not in TIMING_FIELDS}
    assert_sane(moving, len(data))
    assert safety_net.faults == []


def test_every_recording_is_metered(safety_net: SafetyNet) -> None:
    """The recordings the chunking property runs over are read, not skipped as garbage."""
    for name in STREAMS:
        rec = meter_record([(RECORDINGS / name).read_bytes()], CONTENT_TYPES["." + name.rsplit(".", 1)[1]])
        assert rec.model or rec.error, name
    assert safety_net.faults == []


# ---------------------------------------------------------------- any numbers the server reports
# Raw JSON text as a server might write it, Python's json reads all of these but the last
# (an integer of more digits than it reads by default), which makes the whole line unreadable.
NUMBER_TEXT = (st.integers().map(json.dumps) | st.floats().map(json.dumps) | st.booleans().map(json.dumps)
               | st.none().map(json.dumps) | st.text(max_size=5).map(json.dumps)
               | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-320", "-0.0", "0", "-1",
                                  "2.5", "[]", "{}", "1" + "0" * 5000]))
NS = 1e-9


def number(text: str) -> float | None:
    """The test's own reading of a reported number: a JSON int or float, not a bool."""
    value = json.loads(text)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def valid_count(text: str) -> int | None:
    value = number(text)
    return int(value) if value is not None and 0 <= value <= MAX_TOKENS and value.is_integer() else None


def valid_speed(value: float | None) -> float | None:
    return value if value is not None and 0 < value <= MAX_RATE else None


def readable(values: dict[str, str]) -> bool:
    try:
        for text in values.values():
            json.loads(text)
    except ValueError:
        return False
    return True


def recorded(name: str, values: dict[str, str]) -> bytes:
    """The recording with ``values`` put into its last JSON object (the one with the counts)."""
    data = (RECORDINGS / name).read_bytes()
    sep = b"\n\n" if name.endswith(".sse") else b"\n"
    parts = data.split(sep)
    last = max(i for i, p in enumerate(parts) if p.strip() and p.strip() != b"data: [DONE]")
    parts[last] = with_fields(parts[last], values)
    return sep.join(parts)


def token_chunks(name: str) -> int:
    """Chunks of the recording that carry a token, counted here from the parsed objects."""
    objects = json_chunks(name)
    if name.endswith(".ndjson"):
        return sum(1 for o in objects if not o.get("done"))
    return sum(1 for o in objects if o["choices"] and isinstance(o["choices"][0]["delta"].get("content"), str))


@EXAMPLES
@given(eval_count=NUMBER_TEXT, eval_duration=NUMBER_TEXT, prompt_count=NUMBER_TEXT, load=NUMBER_TEXT,
       points=st.lists(st.integers(min_value=0), max_size=10))
@example(eval_count="NaN", eval_duration="1e400", prompt_count="1e-320", load="-Infinity", points=[])
@example(eval_count="2", eval_duration="1e-320", prompt_count="-5", load="NaN", points=[])
@example(eval_count="1e400", eval_duration="-1", prompt_count="26", load="1" + "0" * 5000, points=[])
def test_ollama_numbers_are_exact_or_absent(safety_net: SafetyNet, eval_count: str, eval_duration: str,
                                            prompt_count: str, load: str, points: list[int]) -> None:
    name = "ollama_chat_stream.ndjson"
    values = {"eval_count": eval_count, "eval_duration": eval_duration, "prompt_eval_count": prompt_count,
              "load_duration": load}
    data = recorded(name, values)
    chunks = cut(data, points)
    rec = meter_record(chunks, "application/x-ndjson", times=[0.1 * i for i in range(len(chunks))])
    assert_sane(rec, len(data))
    if not readable(values):  # the final line is not JSON Python reads: nothing of it is used
        values = dict.fromkeys(values, "null")
    count = valid_count(values["eval_count"])
    if count is not None:
        assert (rec.completion_tokens, rec.tokens_estimated) == (count, False)
    else:  # the server's count is garbage: the meter's own, marked as such
        assert (rec.completion_tokens, rec.tokens_estimated) == (token_chunks(name), True)
    assert rec.prompt_tokens == valid_count(values["prompt_eval_count"])
    duration = number(values["eval_duration"])
    expected = (valid_speed(count / (duration * NS)) if count is not None and duration is not None
                and 1 <= duration <= 1e18 else None)
    assert rec.server_tokens_per_s == (pytest.approx(expected) if expected else None)
    load_ns = number(values["load_duration"])
    ok_load = load_ns is not None and (load_ns == 0 or 1 <= load_ns <= 1e18)
    assert rec.load_s == (pytest.approx(load_ns * NS) if ok_load else None)
    assert safety_net.faults == []


@EXAMPLES
@given(completion=NUMBER_TEXT, prompt=NUMBER_TEXT, predicted_n=NUMBER_TEXT, speed=NUMBER_TEXT,
       prompt_speed=NUMBER_TEXT)
@example(completion="1e400", prompt="NaN", predicted_n="48", speed="NaN", prompt_speed="-3")
@example(completion="-1", prompt="2.5", predicted_n="Infinity", speed="0", prompt_speed="1e-320")
def test_openai_usage_and_llama_cpp_timings_are_exact_or_absent(
        safety_net: SafetyNet, completion: str, prompt: str, predicted_n: str, speed: str,
        prompt_speed: str) -> None:
    name = "llamaserver_stream.sse"
    values = {"usage.completion_tokens": completion, "usage.prompt_tokens": prompt,
              "timings.predicted_n": predicted_n, "timings.predicted_per_second": speed,
              "timings.prompt_per_second": prompt_speed}
    data = recorded(name, values)
    rec = meter_record([data], "text/event-stream")
    assert_sane(rec, len(data))
    if not readable(values):
        values = dict.fromkeys(values, "null")
    # usage first, then llama.cpp's own count, then the meter's, marked as estimated
    expected = valid_count(values["usage.completion_tokens"])
    if expected is None:
        expected = valid_count(values["timings.predicted_n"])
    if expected is None:
        assert (rec.completion_tokens, rec.tokens_estimated) == (token_chunks(name), True)
    else:
        assert (rec.completion_tokens, rec.tokens_estimated) == (expected, False)
    assert rec.server_tokens_per_s == valid_speed(number(values["timings.predicted_per_second"]))
    assert rec.prompt_tokens_per_s == valid_speed(number(values["timings.prompt_per_second"]))
    assert safety_net.faults == []


# ---------------------------------------------------------------- the readers under the meter
@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400) | st.lists(st.sampled_from([b"a", b"\n", b"bb", b"\n\n"])).map(b"".join),
       points=st.lists(st.integers(min_value=0), max_size=20), cap=st.integers(min_value=0, max_value=40))
def test_line_splitter_is_split_with_a_cap(data: bytes, points: list[int], cap: int) -> None:
    splitter = LineSplitter(cap)
    got = [line for chunk in cut(data, points) for line in splitter.feed(chunk)]
    *lines, last = data.split(b"\n")
    assert got == [line if len(line) <= cap else None for line in lines]
    assert splitter.rest() == (last if len(last) <= cap else None)
    assert splitter.dropped == sum(len(line) > cap for line in [*lines, last])


def sse_events(data: bytes) -> list[bytes]:
    """``data`` cut after each ``\\n\\n``, in order (the reference the stripper must follow)."""
    events, start = [], 0
    while (end := data.find(b"\n\n", start)) >= 0:
        events.append(data[start:end + 2])
        start = end + 2
    return [*events, data[start:]] if start < len(data) else events


USAGE = b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n'


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.sampled_from([b"data: {}", b"\n", b"\n\n", USAGE, b"data: [DONE]\n\n", b"x", b"usage"])
                      | st.binary(max_size=40), max_size=20),
       points=st.lists(st.integers(min_value=0), max_size=20))
@example(parts=[(RECORDINGS / "vllm_stream_include_usage.sse").read_bytes()], points=[100, 7000, 9000])
def test_usage_stripper_removes_exactly_the_usage_events(parts: list[bytes], points: list[int]) -> None:
    data = b"".join(parts)
    stripper = UsageStripper()
    got = b"".join(stripper.feed(chunk) for chunk in cut(data, points)) + stripper.flush()
    assert got == b"".join(e for e in sse_events(data) if not usage_only(e))


def usage_only(event: bytes) -> bool:
    """The test's own reading of an event: its data lines are one JSON object with no choices
    and a usage."""
    data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def test_a_hundred_megabyte_line_costs_the_meter_no_memory(safety_net: SafetyNet) -> None:
    """An endless line is read in pieces and dropped past the cap: the meter's memory stays flat
    (before, it kept the whole line, copying it again for every chunk)."""
    import tracemalloc

    piece = b"x" * (64 * 1024)
    rec = RequestRecord(ts_start=0.0, server="sim", endpoint="/api/generate", status=200)
    meter = Meter(rec, 0.0, "application/x-ndjson")
    tracemalloc.start()
    try:
        meter.feed(b'{"response":"', 0.0)
        for _ in range(100 * 16):
            meter.feed(piece, 0.0)
        meter.feed(b'","done":false}\n{"done":true,"eval_count":7,"eval_duration":1000000000}\n', 1.0)
        meter.finish(1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert (rec.completion_tokens, rec.tokens_estimated, rec.server_tokens_per_s) == (7, False, 7.0)
    assert rec.bytes_out > 100 * 2**20
    assert safety_net.faults == []
