"""`garrison doctor`: what a user runs first when something is wrong. Facts about this machine and install,
and a list of problems, each with what to do about it.

Nothing here loads a model in this process: the decode check runs in a child process (`engines/probe.py`),
so a native crash (llama.cpp's AMX path on some Sapphire Rapids machines) is reported, not suffered.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from garrison.settings import Settings

# Files under GARRISON_HOME that hold secrets or private records: owner-only.
PRIVATE_FILES = ("server.secret", "admin.key", "garrison.db", "garrison.db-wal", "garrison.db-shm")


@dataclass(slots=True)
class Report:
    """Every fact gathered, and the problems found (empty: all is well)."""

    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, **self.facts}


def diagnose(settings: Settings, *, probe: bool = True, probe_tokens: int = 32) -> Report:
    """Gather the report: CPU, memory, llama.cpp build, threads, home permissions, model digests, decode."""
    report = Report()
    report.facts["cpu"] = _cpu(settings)
    report.facts["memory"] = _memory()
    report.facts["llama_cpp"] = _llama(settings, report)
    report.facts["home"] = _home(settings.home, report)
    report.facts["models"] = _models(settings, report)
    if probe:
        report.facts["decode"] = _decode(settings, report, probe_tokens)
    return report


def _cpu(settings: Settings) -> dict[str, Any]:
    from garrison.engines import cpu
    from garrison.engines.contention import WINDOW_S, OtherLoad

    info = cpu.cpu_info()
    most, fewest = cpu.thread_range(settings.engine.threads, settings.engine.adaptive_threads)
    load = OtherLoad()
    time.sleep(WINDOW_S)  # one governor window: how busy other processes keep these CPUs right now
    others = load.sample()
    return {"model": info.model, "cores": info.cores, "features": info.simd, "amx": info.has_amx,
            "threads": most, "threads_when_busy": fewest,
            "threads_source": "engine.threads" if settings.engine.threads else "every usable core",
            "others_cores": None if others is None else round(others, 2)}


def _memory() -> dict[str, Any]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"total_bytes": values.get("MemTotal"), "available_bytes": values.get("MemAvailable")}


def _llama(settings: Settings, report: Report) -> dict[str, Any]:
    import llama_cpp

    from garrison.engines import cpu

    available = cpu.extra_buffer_types()
    mode = cpu.resolve(settings.engine.cpu_extra_buffers, available)
    if "AMX" in available and mode == "on":
        report.problems.append(
            "engine.cpu_extra_buffers = \"on\" uses llama.cpp's AMX path, which crashes on some Sapphire Rapids "
            "machines (llama.cpp#20824); garrison probes it at start-up, but \"auto\" avoids it")
    return {"version": llama_cpp.__version__,
            "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            "extra_buffer_types": available, "cpu_extra_buffers": settings.engine.cpu_extra_buffers,
            "cpu_extra_buffers_resolved": mode, "cache_type_k": settings.engine.cache_type_k,
            "cache_type_k_resolved": cpu.key_cache_type(settings.engine.cache_type_k,
                                                        on_gpu=settings.engine.n_gpu_layers != 0,
                                                        batch_invariant=settings.engine.batch_invariant)}


def _home(home: Path, report: Report) -> dict[str, Any]:
    """GARRISON_HOME and its files: owner-only directory, secrets and records unreadable by others."""
    facts: dict[str, Any] = {"path": str(home), "exists": home.is_dir(), "files": {}}
    if not home.is_dir():
        return facts
    mode = stat.S_IMODE(home.stat().st_mode)
    facts["mode"] = f"{mode:04o}"
    if mode & 0o077:
        report.problems.append(f"GARRISON_HOME {home} is mode {mode:04o}: others can reach its files; "
                               f"run `chmod 700 {home}`")
    for path in sorted(home.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        file_mode = stat.S_IMODE(path.stat().st_mode)
        facts["files"][path.name] = f"{file_mode:04o}"
        private = path.name in PRIVATE_FILES
        if file_mode & 0o002 or (private and file_mode & 0o077):
            report.problems.append(f"{path} is mode {file_mode:04o}: run `chmod 600 {path}`")
    return facts


def _models(settings: Settings, report: Report) -> list[dict[str, Any]]:
    """Each configured model: its file, and whether its sha256 matches the pinned one."""
    from garrison.registry import embedded_model_path, sha256_file
    from garrison.settings import EMBEDDED_MODEL_ID, ModelConfig

    configs = list(settings.models)
    if settings.default_model and all(c.id != EMBEDDED_MODEL_ID for c in configs):
        try:
            configs.insert(0, ModelConfig(id=EMBEDDED_MODEL_ID, path=embedded_model_path()))
        except Exception as exc:  # noqa: BLE001 - a missing package is a finding, not a crash
            report.problems.append(f"the embedded model is missing: {exc}")
    rows = []
    for config in configs:
        if config.path is None:  # an upstream engine's model: no local file to check
            rows.append({"id": config.id, "path": None, "digest": "no local file"})
            continue
        path = config.path.expanduser()
        row: dict[str, Any] = {"id": config.id, "path": str(path), "pinned": bool(config.sha256)}
        if not path.is_file():
            report.problems.append(f"model '{config.id}': {path} does not exist")
            row["digest"] = "missing"
            rows.append(row)
            continue
        digest = sha256_file(path)
        row.update(sha256=digest, size_bytes=path.stat().st_size)
        if config.sha256 and config.sha256.lower() != digest:
            report.problems.append(f"model '{config.id}': sha256 of {path} is {digest}, but the configuration "
                                   f"pins {config.sha256}: the file changed; restore it or update the pin")
            row["digest"] = "mismatch"
        else:
            row["digest"] = "match" if config.sha256 else "not pinned"
        rows.append(row)
    return rows


def memcpy_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best of `repeats` copies of a buffer larger than any cache: read + write bytes per second, GB/s."""
    import numpy as np

    source = np.ones(megabytes * 1024 * 1024 // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return round(2 * source.nbytes / best / 1e9, 1)


def _decode(settings: Settings, report: Report, tokens: int) -> dict[str, Any]:
    """A test decode of the embedded model in a child process, against the memory-bandwidth bound."""
    from garrison.engines import cpu
    from garrison.registry import embedded_model_path

    try:
        path = embedded_model_path()
    except Exception as exc:  # noqa: BLE001 - reported under models already
        return {"skipped": str(exc)}
    threads = settings.engine.threads or cpu.default_threads()
    mode = cpu.resolve(settings.engine.cpu_extra_buffers, cpu.extra_buffer_types())
    result = cpu.run_probe(path, mode, threads, tokens=tokens)
    facts: dict[str, Any] = {"model": path.name, "extra_buffers": mode, "threads": threads, "ok": result.ok,
                             "detail": result.detail}
    if not result.ok:
        report.problems.append(f"a test decode of {path.name} failed: {result.detail}; try "
                               "`engine.cpu_extra_buffers = \"off\"` and report the CPU above")
        return facts
    bandwidth = memcpy_bandwidth_gbs()
    model_bytes = os.path.getsize(path)  # every weight is read once per generated token
    bound = bandwidth * 1e9 / model_bytes
    facts.update(buffer_types=result.buffer_types, prefill_tok_s=result.prefill_tok_s,
                 decode_tok_s=result.decode_tok_s, memcpy_gbs=bandwidth, model_bytes_per_token=model_bytes,
                 bandwidth_bound_tok_s=round(bound, 1), share_of_bound=round(result.decode_tok_s / bound, 2))
    return facts
