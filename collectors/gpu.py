"""NVIDIA GPUs through NVML (``pynvml``, package nvidia-ml-py), and the LLM servers' own
processes through psutil.

Per GPU, every poll: utilisation, memory used/total, temperature, power draw and limit, SM and
memory clocks, throttling (with the reasons in an event when it starts). Every
``process_interval`` seconds (NVML's process queries cost milliseconds and take a driver lock):
the fan, and each process's GPU memory, named with psutil so the user sees ``ollama`` or
``python -m vllm.entrypoints...`` rather than a pid. NVML is never polled faster than every
:data:`MIN_INTERVAL_S` seconds: fast polling holds the driver lock and stutters GPU work.

No driver, no library or no GPU gives one ABSENT health, "No NVIDIA GPU found (NVML: ...)",
and NVML is not asked again: no repeated errors. A reading a GPU does not support is skipped
from then on.

Independently of NVML, for every local LLM server the collector knows (``servers``), the CPU %
and resident memory of the process listening on its port, children included (Ollama and vLLM
do their work in child processes).

Emits ``gpu_info{gpu,name}`` (1), ``gpu_utilization_percent{gpu}``, ``gpu_memory_used_bytes{gpu}``,
``gpu_memory_total_bytes{gpu}``, ``gpu_memory_percent{gpu}``, ``gpu_temperature_celsius{gpu}``,
``gpu_power_watts{gpu}``, ``gpu_energy_joules_total{gpu}`` (since the driver loaded; Volta and newer),
``gpu_power_limit_watts{gpu}``, ``gpu_sm_clock_hertz{gpu}``,
``gpu_memory_clock_hertz{gpu}``, ``gpu_fan_percent{gpu}``, ``gpu_throttled{gpu}``,
``gpu_process_memory_bytes{gpu,pid,process}``, ``llm_server_process_cpu_percent{server}``,
``llm_server_process_rss_bytes{server}``.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psutil

from app.collector import Collector
from app.records import Event, Health, HealthState, Record, Sample, labels_of
from collectors.http import host_port, is_loopback

log = logging.getLogger(__name__)

__all__ = ["GpuCollector", "ServerRef", "MIN_INTERVAL_S", "process_label"]

MIN_INTERVAL_S = 0.25

# (metric, how to read it from NVML): the cheap per-tick readings (µs each)
_READINGS: tuple[tuple[str, Callable[[Any, Any], float]], ...] = (
    ("gpu_utilization_percent", lambda n, h: n.nvmlDeviceGetUtilizationRates(h).gpu),
    ("gpu_temperature_celsius", lambda n, h: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
    ("gpu_power_watts", lambda n, h: n.nvmlDeviceGetPowerUsage(h) / 1000.0),             # mW
    ("gpu_power_limit_watts", lambda n, h: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
    ("gpu_sm_clock_hertz", lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM) * 1e6),  # MHz
    ("gpu_memory_clock_hertz", lambda n, h: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM) * 1e6),
)
# Throttle reason bits worth telling a user about (idle and application clocks are normal).
_THROTTLE_REASONS = (
    ("SwPowerCap", "power cap"), ("HwSlowdown", "hardware slowdown"),
    ("HwThermalSlowdown", "hardware thermal limit"), ("SwThermalSlowdown", "thermal limit"),
    ("HwPowerBrakeSlowdown", "power brake"), ("SyncBoost", "sync boost"),
    ("DisplayClockSetting", "display clock"),
)


@dataclass(frozen=True)
class ServerRef:
    """An LLM server whose process to watch: its display name, URL and kind."""

    name: str
    url: str
    kind: str = ""


def process_label(proc: psutil.Process) -> str:
    """What to call a process: its name, or its command line when the name says only "python".

    >>> me = psutil.Process()  # this interpreter: "python3 -m pytest ..." under pytest
    >>> process_label(me).split()[0] in (me.name(), os.path.basename(me.cmdline()[0]))
    True
    """
    try:
        name = proc.name()
        if name.startswith("python"):  # python, python3, python3.11: the command line says more
            cmdline = proc.cmdline()
            if len(cmdline) > 1:
                return " ".join([os.path.basename(cmdline[0]), *cmdline[1:]])[:80]
        return name
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"pid {proc.pid}"


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class GpuCollector(Collector):
    """All NVIDIA GPUs of this machine, and the processes of the local LLM servers.

    Args:
        interval: seconds between polls (at least :data:`MIN_INTERVAL_S`).
        process_interval: seconds between the expensive reads (GPU processes, fan, finding the
            server processes).
        servers: returns the servers to watch (discovery's list).
        nvml: the NVML binding (default: ``pynvml``); tests pass a fake of the same surface.
    """

    kind = "gpu"

    def __init__(self, interval: float = 1.0, process_interval: float = 5.0,
                 servers: Callable[[], list[ServerRef]] = list, nvml: ModuleType | Any = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = "gpu"
        self.interval = max(MIN_INTERVAL_S, interval)
        self.process_interval = max(self.interval, process_interval)
        self.servers = servers
        self.clock = clock
        self.monotonic = monotonic
        if nvml is None:
            import pynvml  # imported here: the module is optional at run time

            nvml = pynvml
        self.nvml = nvml
        self._started = False
        self._absent = ""                       # the reason when there is no usable GPU
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._driver = ""
        self._unsupported: set[tuple[int, str]] = set()
        self._warned: set[tuple[int, str]] = set()
        self._throttled: dict[int, str] = {}
        self._slow_due = 0.0
        self._processes: dict[str, list[psutil.Process]] = {}  # server → its process tree
        self._labels: dict[int, str] = {}      # pid → process label, refreshed on slow ticks

    # -- NVML ----------------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        n = self.nvml
        try:
            n.nvmlInit()
        except n.NVMLError as exc:
            self._absent = f"No NVIDIA GPU found (NVML: {exc})"
            log.info("%s; GPU charts stay empty", self._absent)
            return
        try:
            count = n.nvmlDeviceGetCount()
            self._handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._names = [_text(n.nvmlDeviceGetName(h)) for h in self._handles]
            self._driver = _text(n.nvmlSystemGetDriverVersion())
        except n.NVMLError as exc:
            self._absent = f"No NVIDIA GPU found (NVML: {exc})"
            self._handles = []
        if not self._handles and not self._absent:
            self._absent = "No NVIDIA GPU found (NVML: no devices)"
        if self._absent:
            log.info("%s; GPU charts stay empty", self._absent)

    def _nvml(self, index: int, what: str, call: Callable[[], Any]) -> Any:
        """One NVML call, or ``None``: what a GPU does not support is skipped from then on,
        other errors are logged once; a lost GPU raises."""
        if (index, what) in self._unsupported:
            return None
        n = self.nvml
        try:
            return call()
        except n.NVMLError_NotSupported:
            self._unsupported.add((index, what))
        except n.NVMLError as exc:
            if isinstance(exc, n.NVMLError_GpuIsLost):
                raise
            if (index, what) not in self._warned:
                self._warned.add((index, what))
                log.warning("GPU %d: %s failed: %s", index, what, exc)
        return None

    def _gpu(self, now: float, slow: bool, out: list[Record]) -> Health:
        if not self._started:
            self._start()
        if self._absent:
            return Health(self.name, HealthState.ABSENT, now, reason=self._absent, kind=self.kind)
        notes = []
        for i, handle in enumerate(self._handles):
            try:
                note = self._one_gpu(i, handle, now, slow, out)
                if note:
                    notes.append(note)
            except self.nvml.NVMLError_GpuIsLost:
                return Health(self.name, HealthState.ERROR, now, kind=self.kind, version=self._driver,
                              reason=f"GPU {i} ({self._names[i]}) is lost: it fell off the bus, a reboot may be needed")
        return Health(self.name, HealthState.UP, now, reason="; ".join(notes), kind=self.kind, version=self._driver)

    def _one_gpu(self, i: int, handle: Any, now: float, slow: bool, out: list[Record]) -> str:
        """Read GPU ``i`` into ``out``; returns its throttle note."""
        n = self.nvml
        gpu = labels_of(gpu=i)

        def add(metric: str, value: float | None) -> None:
            if value is not None:
                out.append(Sample(metric, float(value), now, gpu))

        out.append(Sample("gpu_info", 1.0, now, labels_of(gpu=i, name=self._names[i])))
        for metric, read in _READINGS:
            add(metric, self._nvml(i, metric, functools.partial(read, n, handle)))
        energy = getattr(n, "nvmlDeviceGetTotalEnergyConsumption", None)  # Volta and newer; mJ
        if energy is not None:
            add("gpu_energy_joules_total", self._nvml(i, "energy", lambda: energy(handle) / 1000.0))
        memory = self._nvml(i, "memory", lambda: n.nvmlDeviceGetMemoryInfo(handle))
        if memory is not None and memory.total:
            add("gpu_memory_used_bytes", memory.used)
            add("gpu_memory_total_bytes", memory.total)
            add("gpu_memory_percent", 100.0 * memory.used / memory.total)
        if slow:
            add("gpu_fan_percent", self._nvml(i, "fan", lambda: n.nvmlDeviceGetFanSpeed(handle)))
            out.extend(self._gpu_processes(i, handle, now))
        return self._throttle(i, handle, now, out)

    def _throttle(self, index: int, handle: Any, now: float, out: list[Record]) -> str:
        """``gpu_throttled`` and an event when throttling starts or ends; returns the note."""
        n = self.nvml
        read = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
        mask = self._nvml(index, "throttle", lambda: read(handle))
        if mask is None:
            return ""
        bits = int(mask)
        reasons = [text for suffix, text in _THROTTLE_REASONS
                   if bits & int(getattr(n, "nvmlClocksThrottleReason" + suffix, 0))]
        out.append(Sample("gpu_throttled", 1.0 if reasons else 0.0, now, labels_of(gpu=index)))
        text = ", ".join(reasons)
        if text != self._throttled.get(index, ""):
            if text:
                out.append(Event("gpu_throttled", self.name, f"GPU {index} is slowed down: {text}", now,
                                 labels_of(gpu=index)))
            else:
                out.append(Event("gpu_unthrottled", self.name, f"GPU {index} runs at full clocks again", now,
                                 labels_of(gpu=index)))
            self._throttled[index] = text
        return f"GPU {index} slowed down: {text}" if text else ""

    def _gpu_processes(self, index: int, handle: Any, now: float) -> list[Record]:
        n = self.nvml
        found: dict[int, float] = {}
        for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for proc in self._nvml(index, query, functools.partial(getattr(n, query), handle)) or []:
                used = getattr(proc, "usedGpuMemory", None)
                if used is not None:  # None: the driver cannot tell (e.g. Windows WDDM)
                    found[proc.pid] = max(found.get(proc.pid, 0.0), float(used))
        out: list[Record] = []
        for pid, used in sorted(found.items()):
            label = self._labels.get(pid)
            if label is None:
                try:
                    label = process_label(psutil.Process(pid))
                except psutil.Error:
                    label = f"pid {pid}"  # in another container or already gone
                self._labels[pid] = label
            out.append(Sample("gpu_process_memory_bytes", used, now,
                              labels_of(gpu=index, pid=pid, process=label)))
        return out

    # -- LLM server processes ------------------------------------------------------------------

    def _find_server_processes(self) -> None:
        """Map each local server to the process listening on its port, and its children. The
        listening sockets are listed (~15 ms) only when a server is new or its process ended;
        known processes keep their psutil objects so their CPU % runs on."""
        wanted = {}
        for ref in self.servers():
            host, port = host_port(ref.url)
            if is_loopback(host):
                wanted[port] = ref.name
        self._labels = {}
        roots = {name: tree[0] for name, tree in self._processes.items()
                 if name in wanted.values() and tree[0].is_running()}
        if set(roots) != set(wanted.values()):
            roots.update(self._listeners({p: n for p, n in wanted.items() if n not in roots}))
        trees: dict[str, list[psutil.Process]] = {}
        for name, root in roots.items():
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                continue
            known = {p.pid: p for p in self._processes.get(name, [])}
            tree = []
            for proc in [root, *children]:
                if proc.pid not in known:
                    try:
                        proc.cpu_percent(None)  # the first call only starts psutil's measurement
                    except psutil.Error:
                        continue
                tree.append(known.get(proc.pid, proc))
            trees[name] = tree
        self._processes = trees

    @staticmethod
    def _listeners(wanted: dict[int, str]) -> dict[str, psutil.Process]:
        """``server name → process`` listening on each wanted port (its own or visible ones)."""
        if not wanted:
            return {}
        try:
            connections = psutil.net_connections(kind="tcp")
        except (psutil.AccessDenied, OSError) as exc:
            log.info("cannot list listening ports (%s): server process figures unavailable", exc)
            return {}
        found = {}
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN and conn.pid is not None and conn.laddr and conn.laddr.port in wanted:
                try:
                    found[wanted[conn.laddr.port]] = psutil.Process(conn.pid)
                except psutil.Error:
                    continue
        return found

    def _server_processes(self, now: float) -> list[Record]:
        out: list[Record] = []
        for server, tree in self._processes.items():
            cpu = rss = 0.0
            alive = 0
            for proc in tree:
                try:
                    with proc.oneshot():
                        cpu += proc.cpu_percent(None)
                        rss += proc.memory_info().rss
                    alive += 1
                except psutil.Error:
                    continue  # a child that ended; the next scan drops it
            if alive:
                out.append(Sample("llm_server_process_cpu_percent", cpu, now, labels_of(server=server)))
                out.append(Sample("llm_server_process_rss_bytes", rss, now, labels_of(server=server)))
        return out

    # -- Collector -----------------------------------------------------------------------------

    def poll(self) -> list[Record]:
        now = self.clock()
        mono = self.monotonic()
        slow = mono >= self._slow_due
        if slow:
            self._slow_due = mono + self.process_interval
            self._find_server_processes()
        out: list[Record] = []
        health = self._gpu(now, slow, out)
        out.extend(self._server_processes(now))
        out.append(health)
        return out

    def close(self) -> None:
        if self._handles:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass  # shutting down anyway
