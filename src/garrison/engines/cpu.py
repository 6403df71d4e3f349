"""The CPU the embedded engine runs on: its features, llama.cpp's extra weight buffers, and the safe choice.

llama.cpp can keep weights in "extra" CPU buffer types that repack them for faster kernels: `AMX` (Intel
Advanced Matrix Extensions, compiled in when the build targets an AMX CPU) and `CPU_REPACK` (interleaved
Q4_0/Q4_K/IQ4_NL/Q8_0... for AVX2/AVX-512/NEON). The AMX path segfaults on the first decode on some
Sapphire Rapids machines (llama.cpp#20824, ollama#17205), so garrison never uses it unless told to:
`engine.cpu_extra_buffers` picks one of

* `on`: llama.cpp's default, every extra buffer type the build has (AMX first where compiled);
* `repack`: no AMX, but `CPU_REPACK` kept for the tensors it can repack (per-tensor buffer overrides);
* `off`: plain CPU buffers only (`use_extra_bufts = false`);
* `auto` (default): `repack` where the build has an AMX buffer type, `on` everywhere else (where both
  are the same thing).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

ExtraBuffers = Literal["auto", "on", "repack", "off"]
Resolved = Literal["on", "repack", "off"]

# ggml_type ids (ggml.h) that ggml-cpu's repack buffer interleaves on x86 (AVX2) and arm64 (NEON/SVE),
# with the row multiple it needs (repack.cpp: ggml_repack_get_optimal_repack_type).
_REPACKABLE: dict[int, int] = {
    2: 8,  # Q4_0
    8: 4,  # Q8_0
    10: 8,  # Q2_K
    12: 8,  # Q4_K
    13: 8,  # Q5_K
    14: 8,  # Q6_K
    20: 8,  # IQ4_NL
    39: 8,  # MXFP4
}
# Tensors only ever read by row lookup (GET_ROWS), which the repack buffer does not serve.
_LOOKUP_ONLY = re.compile(r"^token_embd\.weight$")


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """What /proc/cpuinfo (or the platform) says about this machine's CPU."""

    model: str
    flags: frozenset[str]
    cores: int

    @property
    def has_amx(self) -> bool:
        return any(flag.startswith("amx") for flag in self.flags)

    @property
    def simd(self) -> list[str]:
        """The vector and matrix extensions that matter to llama.cpp, in a stable order."""
        wanted = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                  "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve",
                  "i8mm")
        return [f for f in wanted if f in self.flags]


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU model, feature flags and usable cores."""
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and value.strip() and model in ("", platform.machine()):
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model=model, flags=flags, cores=usable_cores())


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup"), own_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """Cores this process may use: its affinity mask (taskset, cpusets), capped by its cgroup's CPU quota
    (`docker run --cpus`, a Kubernetes CPU limit), rounded up; not just the machine's count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, own_cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: Path, own_cgroup: Path) -> float | None:
    """The tightest CPU bandwidth limit (cores) on this process's cgroup and its ancestors, v2 or v1, or None."""
    try:
        lines = own_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2: "max 100000" or "200000 100000" in cpu.max
            pairs = [_read(d / "cpu.max").split() for d in _ancestors(root, path)]
        elif "cpu" in controllers.split(","):  # cgroup v1: a cfs quota of -1 means none
            pairs = [[_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")]
                     for d in _ancestors(root / "cpu", path)]
        else:
            continue
        limits += [int(x[0]) / int(x[1]) for x in pairs
                   if len(x) == 2 and x[0].isdigit() and x[1].isdigit() and int(x[0]) and int(x[1])]
    return min(limits) if limits else None


def _ancestors(root: Path, path: str) -> list[Path]:
    """`root/path` and each parent up to `root` (a container usually sees its own cgroup as the root)."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def extra_buffer_types() -> list[str]:
    """Names of the extra CPU buffer types this llama.cpp build has (e.g. ["AMX", "CPU_REPACK"])."""
    return [name for name, _ in _extra_bufts()]


@functools.cache
def _extra_bufts() -> tuple[tuple[str, int], ...]:
    """(name, handle) of each extra CPU buffer type, read through ggml's backend registry."""
    from llama_cpp._ggml import libggml

    lib: Any = libggml
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_buft_name.restype = ctypes.c_char_p
    lib.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    import llama_cpp

    llama_cpp.llama_backend_init()  # registers the backends
    device = lib.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not device:
        return ()
    address = lib.ggml_backend_reg_get_proc_address(lib.ggml_backend_dev_backend_reg(device),
                                                    b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return ()
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    array = get_extra(device)
    found: list[tuple[str, int]] = []
    i = 0
    while array and array[i]:
        found.append((lib.ggml_backend_buft_name(array[i]).decode(), int(array[i])))
        i += 1
    return tuple(found)


def resolve(setting: ExtraBuffers, available: Iterable[str]) -> Resolved:
    """The extra-buffer mode to load with: `auto` avoids AMX, and nothing is asked of a build that lacks it."""
    names = set(available)
    if setting == "auto":
        return "repack" if "AMX" in names else "on"
    if setting == "repack" and "AMX" not in names:
        return "on"  # without an AMX buffer type, llama.cpp's default is exactly "repack"
    return setting


@dataclass(slots=True)
class BufferPlan:
    """How a model's weights are placed: the llama_model_params fields, kept alive while the model loads."""

    mode: Resolved
    use_extra_bufts: bool
    repacked: list[str] = field(default_factory=list)  # tensors put in CPU_REPACK by override
    _keep: list[Any] = field(default_factory=list)

    def apply(self, params: Any) -> None:
        """Set `use_extra_bufts` and `tensor_buft_overrides` on a llama_model_params."""
        params.use_extra_bufts = self.use_extra_bufts
        if self._keep:
            params.tensor_buft_overrides = ctypes.cast(self._keep[0], ctypes.c_void_p)


class _Override(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def plan(mode: Resolved, tensors: Iterable[tuple[str, int, list[int]]]) -> BufferPlan:
    """The buffer plan for `mode`; `tensors` are (name, ggml type, dims) from the GGUF tensor table.

    `repack` loads with extra buffers off and names each tensor CPU_REPACK can take, so AMX is never asked
    and every other weight stays in plain CPU memory.
    """
    if mode == "on":
        return BufferPlan(mode, True)
    if mode == "off":
        return BufferPlan(mode, False)
    handle = dict(_extra_bufts()).get("CPU_REPACK")
    names = [name for name, kind, dims in tensors
             if handle and kind in _REPACKABLE and len(dims) == 2 and dims[1] % _REPACKABLE[kind] == 0
             and name.endswith(".weight") and not _LOOKUP_ONLY.match(name)]
    result = BufferPlan(mode, False, repacked=names)
    if names:
        pattern = ("^(" + "|".join(re.escape(n) for n in names) + ")$").encode()
        array = (_Override * 2)()
        array[0].pattern, array[0].buft = pattern, handle
        array[1].pattern, array[1].buft = None, None
        result._keep = [array, pattern]
    return result


KeyType = Literal["auto", "f16", "bf16"]
# ggml_type ids (ggml.h) of the key cache element types garrison offers
GGML_TYPES: dict[str, int] = {"f16": 1, "bf16": 30}


@functools.cache
def build_features() -> frozenset[str]:
    """The CPU features this llama.cpp build was compiled for, from its system info ('AVX2 = 1 | ...')."""
    import llama_cpp

    text = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return frozenset(re.findall(r"([A-Z0-9_]+) = 1", text))


def key_cache_type(
    setting: KeyType, *, on_gpu: bool, batch_invariant: bool = True, info: CpuInfo | None = None,
    build: frozenset[str] | None = None,
) -> Literal["f16", "bf16"]:
    """The KV cache's key type: `setting`, or for `auto` bf16 where answers are to be batch invariant on a CPU
    with bf16 vector code, else f16 (without the guarantee, f16 keys keep ggml's faster tiled prefill).

    ggml's CPU flash attention takes a tiled kernel (64+ query rows of one sequence) or a split-KV kernel
    (one row of one stream over 512+ cells) only when keys and values are both f16 (or f32); both sum in
    another order than the per-row kernel, so a token's numbers would depend on its batch, its prompt's
    chunking and the thread count. bf16 keys beside f16 values take the per-row kernel for every shape:
    exact without padding rows, and a lone long-context step as fast as the split kernel (docs/engine.md).
    ggml computes bf16 dot products with AVX2/AVX-512 on x86-64 and with the BF16 extension on arm64, where
    both the CPU (`info`) and the build (`build`, its compiled features) have them; elsewhere, and on GPUs
    (whose kernels want matching types), keys stay f16.
    """
    if setting != "auto":
        return setting
    if on_gpu or not batch_invariant:
        return "f16"
    flags = (info or cpu_info()).flags
    compiled = build_features() if build is None else build
    x86 = "avx2" in flags and "AVX2" in compiled
    arm = {"asimd", "bf16"} <= flags and "NEON" in compiled
    return "bf16" if x86 or arm else "f16"


def default_threads() -> int:
    """llama.cpp threads per step when `engine.threads` is unset: every core this process may use."""
    return usable_cores()


def thread_range(threads: int | None, adaptive: bool) -> tuple[int, int]:
    """(most, fewest) llama.cpp threads per step: `engine.threads` (default every usable core), and with
    `engine.adaptive_threads` half of it (at least one) while other processes use the CPUs (contention.py)."""
    most = threads or default_threads()
    return most, max(1, most // 2) if adaptive else most


def choose_buffers(info: Any, setting: ExtraBuffers, threads: int) -> BufferPlan:
    """The buffer plan a model loads with; an AMX build asked for `on` is first tried in a child process.

    A native crash in the probe (the AMX failure) falls back to `repack` with a log line, so the server
    never takes that path itself.
    """
    available = extra_buffer_types()
    mode = resolve(setting, available)
    if mode == "on" and "AMX" in available:
        result = run_probe(info.path, "on", threads)
        if not result.ok:
            log.warning("llama.cpp's AMX path failed a test decode of %s (%s); loading with "
                        "cpu_extra_buffers = \"repack\" instead", info.id, result.detail)
            mode = "repack"
    return plan(mode, _layout(info.path) if mode == "repack" else [])


def _layout(path: Path) -> list[tuple[str, int, list[int]]]:
    from garrison.gguf_header import read_header

    return read_header(path).layout


class BufferLog:
    """Captures llama.cpp's "<type> model buffer size = N MiB" lines while a model loads (and hides the rest)."""

    _PATTERN = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")

    def __init__(self) -> None:
        self.sizes: dict[str, float] = {}
        import llama_cpp

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: Any) -> None:
            match = self._PATTERN.search(text.decode("utf-8", "replace"))
            if match:
                self.sizes[match.group(1)] = self.sizes.get(match.group(1), 0.0) + float(match.group(2))
            if level == 3:  # GGML_LOG_LEVEL_ERROR: keep llama.cpp's errors visible
                log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

        self._callback = callback

    def __enter__(self) -> BufferLog:
        import llama_cpp

        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc: object) -> None:
        import llama_cpp
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@dataclass(slots=True)
class ProbeResult:
    """A test decode in a child process: whether it survived, and its speed."""

    ok: bool
    detail: str
    prefill_tok_s: float = 0.0
    decode_tok_s: float = 0.0
    buffer_types: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def run_probe(path: Path, mode: str, threads: int, *, tokens: int = 16, timeout_s: float = 300.0) -> ProbeResult:
    """Load `path` and decode in a child process (`python -m garrison.engines.probe`); a crash is a result."""
    import sys

    command = [sys.executable, "-m", "garrison.engines.probe", str(path), "--extra-buffers", mode,
               "--threads", str(threads), "--tokens", str(tokens)]
    return run_child(command, timeout_s)


def run_child(command: list[str], timeout_s: float) -> ProbeResult:
    """Run a probe command; a signal (a native crash), a timeout or a failure is the result, never raised."""
    import json
    import signal
    import subprocess
    import time

    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"the test decode did not finish within {timeout_s:.0f} s")
    seconds = time.perf_counter() - started
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return ProbeResult(False, f"the test decode crashed ({name})", seconds=seconds)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return ProbeResult(False, f"the test decode failed (exit {done.returncode}: {tail})", seconds=seconds)
    data = json.loads(lines[-1])
    return ProbeResult(True, "ok", data["prefill_tok_s"], data["decode_tok_s"], data["buffer_types"], seconds)
