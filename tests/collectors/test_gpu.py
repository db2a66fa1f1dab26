"""The GPU collector: its logic against a fake of the documented ``pynvml`` surface (same
function names and return shapes, the real ``pynvml.NVMLError_*`` classes), the real ``pynvml``
on this GPU-less machine, and the LLM server process found by its listening port."""
from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import psutil
import pynvml
import pytest

from app.hub import Hub
from app.records import Event, Health, HealthState, Sample
from collectors.gpu import MIN_INTERVAL_S, GpuCollector, ServerRef
from tests.support import wait_until

GIB = 2**30


class FakeNvml:
    """The part of pynvml the collector uses, answering like the NVML docs describe: structs
    with ``.gpu`` / ``.used`` / ``.total`` / ``.pid`` / ``.usedGpuMemory``, milliwatts, MHz,
    a throttle-reason bit mask, and the real NVMLError subclasses for failures."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    nvmlClocksThrottleReasonGpuIdle = pynvml.nvmlClocksThrottleReasonGpuIdle
    nvmlClocksThrottleReasonSwPowerCap = pynvml.nvmlClocksThrottleReasonSwPowerCap
    nvmlClocksThrottleReasonSwThermalSlowdown = pynvml.nvmlClocksThrottleReasonSwThermalSlowdown

    def __init__(self, gpus: list[dict], init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.calls: Counter[str] = Counter()

    def _gpu(self, handle: int, key: str):
        value = self.gpus[handle][key]
        if isinstance(value, Exception):
            raise value
        return value

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._gpu(h, "name")

    def nvmlDeviceGetUtilizationRates(self, h: int):
        return SimpleNamespace(gpu=self._gpu(h, "util"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: int):
        used, total = self._gpu(h, "memory")
        return SimpleNamespace(used=used, total=total, free=total - used)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(h, "temp")

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._gpu(h, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return self._gpu(h, "limit_mw")

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        return self._gpu(h, "sm_mhz" if clock == pynvml.NVML_CLOCK_SM else "mem_mhz")

    def nvmlDeviceGetFanSpeed(self, h: int) -> int:
        self.calls["nvmlDeviceGetFanSpeed"] += 1
        return self._gpu(h, "fan")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: int) -> int:
        return self._gpu(h, "throttle")

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list:
        self.calls["nvmlDeviceGetComputeRunningProcesses"] += 1
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._gpu(h, "processes")]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list:
        return []


def rtx(**changes: object) -> dict:
    gpu = dict(name="NVIDIA GeForce RTX 4090", util=87, memory=(20 * GIB, 24 * GIB), temp=71,
               power_mw=312_500, limit_mw=450_000, sm_mhz=2520, mem_mhz=10501, fan=64,
               throttle=pynvml.nvmlClocksThrottleReasonGpuIdle, processes=[(os.getpid(), 18 * GIB)])
    gpu.update(changes)
    return gpu


def by_gpu(records: list, name: str) -> dict[str, float]:
    return {dict(r.labels)["gpu"]: r.value for r in records if isinstance(r, Sample) and r.name == name}


def health(records: list) -> Health:
    return next(r for r in records if isinstance(r, Health))


def test_every_reading_in_base_units_and_processes_named() -> None:
    nvml = FakeNvml([rtx(), rtx(name="NVIDIA A100-SXM4-80GB", fan=pynvml.NVMLError_NotSupported(),
                            processes=[(4_000_000, 3 * GIB)])])
    records = GpuCollector(nvml=nvml).poll()
    assert health(records).state == HealthState.UP and health(records).version == "550.54.15"
    assert by_gpu(records, "gpu_utilization_percent") == {"0": 87, "1": 87}
    assert by_gpu(records, "gpu_memory_percent")["0"] == pytest.approx(100 * 20 / 24)
    assert by_gpu(records, "gpu_power_watts")["0"] == 312.5 and by_gpu(records, "gpu_power_limit_watts")["0"] == 450
    assert by_gpu(records, "gpu_sm_clock_hertz")["0"] == 2.52e9
    assert by_gpu(records, "gpu_fan_percent") == {"0": 64}  # the A100 has no fan: skipped, no error
    assert by_gpu(records, "gpu_throttled") == {"0": 0, "1": 0}  # idle clocks are not throttling
    names = {dict(r.labels)["gpu"]: dict(r.labels)["name"] for r in records
             if isinstance(r, Sample) and r.name == "gpu_info"}
    assert names == {"0": "NVIDIA GeForce RTX 4090", "1": "NVIDIA A100-SXM4-80GB"}
    procs = {dict(r.labels)["pid"]: (dict(r.labels)["process"], r.value)
             for r in records if isinstance(r, Sample) and r.name == "gpu_process_memory_bytes"}
    # this very test process, named by psutil from its command line; a pid from elsewhere
    assert procs[str(os.getpid())][0].startswith("python") and "pytest" in procs[str(os.getpid())][0]
    assert procs["4000000"] == ("pid 4000000", 3 * GIB)


def test_expensive_reads_only_every_process_interval_and_never_faster_than_the_floor() -> None:
    assert GpuCollector(interval=0.01, nvml=FakeNvml([rtx()])).interval == MIN_INTERVAL_S
    nvml = FakeNvml([rtx(), rtx(fan=pynvml.NVMLError_NotSupported())])
    ticks = itertools.count(0.0, 1.0)
    collector = GpuCollector(interval=1.0, process_interval=5.0, nvml=nvml, monotonic=lambda: next(ticks))
    polls = [collector.poll() for _ in range(10)]  # 10 polls, 1 s apart
    assert all(by_gpu(p, "gpu_utilization_percent") for p in polls)
    assert nvml.calls["nvmlDeviceGetComputeRunningProcesses"] == 2 * 2  # at 0 s and 5 s, both GPUs
    assert nvml.calls["nvmlDeviceGetFanSpeed"] == 2 + 1   # GPU 1's unsupported fan asked once only
    assert nvml.calls["nvmlInit"] == 1


def test_throttling_start_and_end_are_events_with_reasons() -> None:
    gpu = rtx()
    collector = GpuCollector(nvml=FakeNvml([gpu]))
    collector.poll()
    gpu["throttle"] = pynvml.nvmlClocksThrottleReasonSwPowerCap | pynvml.nvmlClocksThrottleReasonSwThermalSlowdown
    records = collector.poll()
    assert by_gpu(records, "gpu_throttled") == {"0": 1}
    events = [e for e in records if isinstance(e, Event)]
    assert [e.message for e in events] == ["GPU 0 is slowed down: power cap, thermal limit"]
    assert health(records).reason == "GPU 0 slowed down: power cap, thermal limit"
    assert not [e for e in collector.poll() if isinstance(e, Event)]  # still throttled: no repeat
    gpu["throttle"] = 0
    assert [e.kind for e in collector.poll() if isinstance(e, Event)] == ["gpu_unthrottled"]


def test_lost_gpu_is_an_error_that_says_so() -> None:
    gpu = rtx()
    collector = GpuCollector(nvml=FakeNvml([gpu]))
    collector.poll()
    gpu["util"] = pynvml.NVMLError_GpuIsLost()
    state = health(collector.poll())
    assert state.state == HealthState.ERROR and "is lost" in state.reason


def test_driver_not_loaded_is_absent() -> None:
    nvml = FakeNvml([], init_error=pynvml.NVMLError_DriverNotLoaded())
    state = health(GpuCollector(nvml=nvml).poll())
    assert state.state == HealthState.ABSENT and state.reason.startswith("No NVIDIA GPU found (NVML: Driver Not Loaded")


def test_real_nvml_on_this_machine_reports_no_gpu_once_without_log_spam(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    collector = GpuCollector(interval=MIN_INTERVAL_S)  # the real pynvml, no driver here
    hub = Hub(store=None)
    published: list = []
    hub.subscribe(published.extend)
    hub.add_collectors([collector])
    hub.start()
    try:
        wait_until(lambda: sum(isinstance(r, Health) for r in published) >= 4, what="four polls")
    finally:
        hub.stop()
    healths = [r for r in published if isinstance(r, Health)]
    assert {h.state for h in healths} == {HealthState.ABSENT}
    assert healths[0].reason.startswith("No NVIDIA GPU found (NVML: ")
    assert len([e for e in published if isinstance(e, Event)]) == 1  # one "source_absent", not one per poll
    gpu_logs = [r for r in caplog.records if r.name == "collectors.gpu"]
    assert len(gpu_logs) == 1


def test_server_process_cpu_and_memory_found_by_its_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0
        wait_until(listening, what="the server process to listen")
        ref = ServerRef(f"openai@127.0.0.1:{port}", f"http://127.0.0.1:{port}", "openai")
        no_driver = FakeNvml([], init_error=pynvml.NVMLError_LibraryNotFound())
        collector = GpuCollector(servers=lambda: [ref], nvml=no_driver)
        collector.poll()
        records = collector.poll()
        values = {r.name: r.value for r in records if isinstance(r, Sample) and dict(r.labels) == {"server": ref.name}}
        rss = psutil.Process(server.pid).memory_info().rss
        assert values["llm_server_process_rss_bytes"] == pytest.approx(rss, rel=0.2)
        assert values["llm_server_process_cpu_percent"] >= 0
        assert health(records).state == HealthState.ABSENT  # no GPU does not hide the process figures
    finally:
        server.terminate()
        server.wait(10)
