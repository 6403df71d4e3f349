"""`garrison size --here`: detect this machine's RAM, CPU and GPUs (nvidia-smi or NVML when present)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from garrison.sizing import catalog
from garrison.sizing.catalog import Hardware

MIB = 1024**2


@dataclass(frozen=True)
class Gpu:
    """One GPU as the driver reports it."""

    name: str
    memory_bytes: int


@dataclass(frozen=True)
class Machine:
    """What this machine offers for inference."""

    cpu: str
    cores: int
    ram_bytes: int
    gpus: tuple[Gpu, ...] = field(default=())
    apple_chip: str | None = None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _nvidia_smi() -> list[Gpu]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(out: str) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` (MiB) output."""
    gpus = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            gpus.append(Gpu(name.strip(), int(mib.strip()) * MIB))
    return gpus


def _nvml() -> list[Gpu]:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        try:
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                gpus.append(Gpu(name, int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)))
            return gpus
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML raises its own error types when the driver is absent or broken
        return []


def _apple_chip() -> str | None:
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return None
    try:
        return (
            subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def detect() -> Machine:
    """Look at this machine: CPU, RAM, NVIDIA GPUs, Apple silicon."""
    import psutil

    gpus = _nvidia_smi() or _nvml()
    return Machine(
        _cpu_name(), os.cpu_count() or 1, int(psutil.virtual_memory().total), tuple(gpus), _apple_chip()
    )


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _contains(words: list[str], label: list[str]) -> bool:
    return any(words[i : i + len(label)] == label for i in range(len(words) - len(label) + 1))


def match_catalog(name: str, kind: str) -> Hardware | None:
    """The catalog entry whose id or alias appears, word for word, in a driver-reported name."""
    words = _tokens(name)
    best: tuple[int, Hardware] | None = None
    for hw in catalog.hardware():
        if hw.kind != kind:
            continue
        for label in (hw.id, hw.name, *hw.aliases):
            label_words = _tokens(label)
            if label_words and _contains(words, label_words) and (best is None or len(label_words) > best[0]):
                best = (len(label_words), hw)
    return best[1] if best else None


def machine_hardware(machine: Machine) -> list[tuple[Hardware, int]]:
    """This machine as catalog-style devices, accelerators first: (device, count)."""
    devices: list[tuple[Hardware, int]] = []
    if machine.gpus:
        first = machine.gpus[0]
        same = [g for g in machine.gpus if g.name == first.name]
        known = match_catalog(first.name, "cuda")
        devices.append(
            (
                Hardware(
                    id="detected-gpu",
                    name=first.name,
                    kind="cuda",
                    memory_bytes=min(g.memory_bytes for g in same),
                    bandwidth_bytes_per_s=known.bandwidth_bytes_per_s if known else None,
                    flops=known.flops if known else None,
                    max_devices=len(same),
                ),
                len(same),
            )
        )
    if machine.apple_chip:
        known = match_catalog(machine.apple_chip, "metal")
        devices.append(
            (
                Hardware(
                    id="detected-apple",
                    name=f"{machine.apple_chip} ({machine.ram_bytes / 1024**3:.0f} GiB)",
                    kind="metal",
                    memory_bytes=machine.ram_bytes,
                    bandwidth_bytes_per_s=known.bandwidth_bytes_per_s if known else None,
                    flops=known.flops if known else None,
                    max_devices=1,
                    usable_fraction=0.75,
                ),
                1,
            )
        )
    devices.append(
        (
            Hardware(
                id="detected-ram",
                name="CPU RAM",
                kind="cpu",
                memory_bytes=machine.ram_bytes,
                bandwidth_bytes_per_s=None,
                flops=None,
                max_devices=1,
                usable_fraction=0.9,
            ),
            1,
        )
    )
    return devices
