"""Energy per token from the three sources, through the real collectors into a real Store: a
fake NVML with the documented API shape (an energy counter in mJ, power in mW), and a RAPL
powercap folder laid out like ``/sys/class/powercap`` whose counter wraps. Each figure is
compared with the hand computation in the test."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pynvml
import pytest

from app.records import HealthState, RequestRecord
from app.storage.store import Store
from app.usage.report import UsageCell, usage_report
from collectors.energy import CpuEnergyCollector
from collectors.gpu import GpuCollector
from tests.collectors.test_gpu import FakeNvml, rtx
from tests.support import health_of
from tests.support.clock import FakeClock

T = 1_700_000_000.0
SERVER = "ollama@127.0.0.1:11434"


class EnergyNvml(FakeNvml):
    """A Volta-or-newer GPU: ``nvmlDeviceGetTotalEnergyConsumption`` in millijoules."""

    def __init__(self, gpus: list[dict], energy_mj: list[int]) -> None:
        super().__init__(gpus)
        self.energy_mj = energy_mj

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return self.energy_mj[h]


class OldNvml(FakeNvml):
    """A GPU older than Volta: the energy counter is not supported."""

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        raise pynvml.NVMLError_NotSupported()


def request(start: float, end: float, model: str, tokens: int) -> RequestRecord:
    return RequestRecord(ts_start=T + start, server=SERVER, endpoint="/api/chat", model=model, status=200,
                         latency_s=end - start, completion_tokens=tokens)


def per_model(store: Store) -> dict[str, UsageCell]:
    store.flush()
    return {c.model: c for c in usage_report(store.reader(), T - 3600, T + 3600).rows}


def energy(cell: UsageCell) -> tuple[Any, ...]:
    """What a user sees of a row's energy: J/token, joules, sources, estimate or not."""
    return (cell.joules_per_token, cell.energy_j, set(cell.energy_sources), cell.energy_shared)


def record(tmp_path: Path, collector, clock: FakeClock, before_poll, requests: list[RequestRecord]) -> Store:
    store = Store(tmp_path / "energy.db", clock=clock)
    store.start()
    for second in range(0, 12):
        clock.t = T + second
        before_poll(second)
        store.put(collector.poll())
    store.put(requests)
    return store


def test_nvml_energy_counter_gives_joules_per_token(tmp_path: Path) -> None:
    """150 W by the counter. A: 2.0-4.0 s alone (300 J, 100 tokens); B: 6.5-8.5 s and C:
    7.5-9.5 s overlap for a second, whose 150 J are split: B 150 + 75 J, C 75 + 150 J."""
    nvml = EnergyNvml([rtx(power_mw=999_000)], [5_000_000])
    clock = FakeClock(T)

    def tick(second: int) -> None:
        nvml.energy_mj[0] = 5_000_000 + 150_000 * second
    store = record(tmp_path, GpuCollector(nvml=nvml, clock=clock, monotonic=itertools.count().__next__), clock,
                   tick, [request(2.0, 4.0, "m1", 100), request(6.5, 8.5, "m1", 50), request(7.5, 9.5, "m2", 90)])
    figures = per_model(store)
    assert energy(figures["m1"]) == (pytest.approx((300 + 225) / 150), pytest.approx(525), {"gpu_counter"}, True)
    assert energy(figures["m2"]) == (pytest.approx(225 / 90), pytest.approx(225), {"gpu_counter"}, True)
    store.close()


def test_power_readings_when_the_gpu_has_no_energy_counter(tmp_path: Path) -> None:
    """Power rises 10 W a second from 100 W: the energy between readings is the trapezoid, and
    here (a straight line) the exact integral 100 (b - a) + 5 (b² - a²)."""
    nvml = OldNvml([rtx()])
    clock = FakeClock(T)

    def tick(second: int) -> None:
        nvml.gpus[0]["power_mw"] = (100 + 10 * second) * 1000
    collector = GpuCollector(nvml=nvml, clock=clock, monotonic=itertools.count().__next__)
    store = record(tmp_path, collector, clock, tick, [request(2, 4, "m1", 40), request(6, 8, "m2", 70)])

    def integral(a: float, b: float) -> float:
        return 100 * (b - a) + 5 * (b * b - a * a)
    figures = per_model(store)
    assert energy(figures["m1"]) == (pytest.approx(integral(2, 4) / 40), pytest.approx(integral(2, 4)),
                                     {"gpu_power"}, False)
    assert figures["m2"].joules_per_token == pytest.approx(integral(6, 8) / 70)
    store.close()


def rapl_zone(root: Path, name: str, package: str, range_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(package + "\n")
    (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
    (zone / "energy_uj").write_text("0\n")
    return zone


def test_cpu_rapl_counter_with_a_wrap_around(tmp_path: Path) -> None:
    """No GPU: the CPU package counter, 120 J a second, wrapping at its range between the
    readings at 2 s and 3 s. A (2-4 s) used 240 J for 60 tokens."""
    root = tmp_path / "powercap"
    range_uj = 262_143_328_850
    package = rapl_zone(root, "intel-rapl:0", "package-0", range_uj)
    core = rapl_zone(root, "intel-rapl:0:0", "core", range_uj)  # part of the package: not added again
    clock = FakeClock(T)

    def tick(second: int) -> None:
        reading = (range_uj - 300_000_000 + 120_000_000 * second) % range_uj
        (package / "energy_uj").write_text(f"{reading}\n")
        (core / "energy_uj").write_text(f"{reading // 2}\n")
    collector = CpuEnergyCollector(root, clock=clock)
    store = record(tmp_path, collector, clock, tick, [request(2, 4, "m1", 60), request(5, 6.5, "m2", 90)])
    figures = per_model(store)
    assert energy(figures["m1"]) == (pytest.approx(240 / 60), pytest.approx(240), {"cpu_rapl"}, False)
    assert figures["m2"].joules_per_token == pytest.approx(180 / 90)
    store.close()


def test_no_rapl_counters_is_absent_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "intel-rapl:0").mkdir()  # a zone whose counter cannot be read
    health = health_of(CpuEnergyCollector(tmp_path).poll())
    assert health.state == HealthState.ABSENT
    assert "No CPU energy counters" in health.reason and "intel-rapl:0" in health.reason
    health = health_of(CpuEnergyCollector(tmp_path / "missing").poll())
    assert health.state == HealthState.ABSENT and "no RAPL zones" in health.reason


def test_requests_outside_the_energy_readings_get_no_energy(tmp_path: Path) -> None:
    nvml = EnergyNvml([rtx()], [0])
    clock = FakeClock(T)

    def tick(second: int) -> None:
        nvml.energy_mj[0] = 200_000 * second
    store = record(tmp_path, GpuCollector(nvml=nvml, clock=clock, monotonic=itertools.count().__next__), clock,
                   tick, [request(20, 22, "late", 50), request(1, 2, "m1", 10)])
    figures = per_model(store)
    assert figures["late"].joules_per_token is None
    assert figures["m1"].joules_per_token == pytest.approx(200 / 10)
    store.close()
