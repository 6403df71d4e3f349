"""CPU paths of the embedded engine: which extra weight buffers a model loads with, and the crash probe.

This machine has no AMX, so the AMX branch is exercised by forcing what the build reports (the list of
extra buffer types) while the rest runs for real: the probe child, the repack plan, the model load.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from garrison.engines import cpu
from garrison.registry import embedded_model_path


def test_auto_avoids_amx_only_where_the_build_has_it() -> None:
    assert cpu.resolve("auto", ["AMX", "CPU_REPACK"]) == "repack"
    assert cpu.resolve("auto", ["CPU_REPACK"]) == "on"
    assert cpu.resolve("repack", ["CPU_REPACK"]) == "on"  # the same thing without an AMX buffer type
    assert cpu.resolve("off", ["AMX", "CPU_REPACK"]) == "off"
    assert cpu.resolve("on", ["AMX", "CPU_REPACK"]) == "on"


def test_cpuinfo_flags_and_amx(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
                    "flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n")
    parsed = cpu.cpu_info(info)
    assert parsed.model == "Intel(R) Xeon(R) Platinum 8488C"
    assert parsed.has_amx
    assert "amx_int8" in parsed.simd and "avx512_vnni" in parsed.simd
    assert not cpu.cpu_info(tmp_path / "missing").has_amx


def test_key_cache_type_is_bf16_on_cpus_with_bf16_vector_code_and_f16_on_gpus() -> None:
    def info(*flags: str) -> cpu.CpuInfo:
        return cpu.CpuInfo(model="test", flags=frozenset(flags), cores=2)

    x86, arm = frozenset({"AVX", "AVX2", "F16C"}), frozenset({"NEON", "ARM_FMA"})

    def auto(flags: cpu.CpuInfo, build: frozenset[str], **kw: bool) -> str:
        return cpu.key_cache_type("auto", on_gpu=kw.get("on_gpu", False),
                                  batch_invariant=kw.get("batch_invariant", True), info=flags, build=build)

    assert auto(info("sse4_2", "avx2", "f16c"), x86) == "bf16"
    assert auto(info("fp", "asimd", "bf16"), arm) == "bf16"  # arm64 with BF16
    assert auto(info("fp", "asimd"), arm) == "f16"  # no bf16 dot code
    assert auto(info("sse4_2"), frozenset({"SSE3"})) == "f16"
    assert auto(info("avx2", "f16c"), frozenset({"SSE3"})) == "f16"  # a generic build: no AVX2 code compiled
    assert auto(info("avx2"), x86, on_gpu=True) == "f16"  # GPU kernels want matching types
    assert auto(info("avx2"), x86, batch_invariant=False) == "f16"  # f16 keeps ggml's tiled prefill kernel
    assert cpu.key_cache_type("f16", on_gpu=False, info=info("avx2"), build=x86) == "f16"
    assert cpu.key_cache_type("bf16", on_gpu=True, info=info(), build=frozenset()) == "bf16"
    assert cpu.GGML_TYPES == {"f16": 1, "bf16": 30}  # ggml.h's GGML_TYPE_F16 and GGML_TYPE_BF16
    assert "AVX2" in cpu.build_features() or "avx2" not in cpu.cpu_info().flags  # this machine's native build


def test_a_native_crash_in_the_probe_child_is_a_result() -> None:
    crashed = cpu.run_child([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], timeout_s=60)
    assert not crashed.ok
    assert "crashed (SIGSEGV)" in crashed.detail
    failed = cpu.run_child([sys.executable, "-c", "raise SystemExit('no model')"], timeout_s=60)
    assert not failed.ok and "exit 1" in failed.detail and "no model" in failed.detail


def test_repack_plan_names_only_tensors_cpu_repack_takes() -> None:
    layout = [("token_embd.weight", 2, [576, 49152]), ("blk.0.attn_q.weight", 2, [576, 576]),
              ("blk.0.ffn_down.weight", 12, [1536, 576]), ("blk.0.attn_k.weight", 3, [576, 192]),
              ("blk.0.attn_norm.weight", 0, [576]), ("blk.0.odd.weight", 2, [576, 7])]
    plan = cpu.plan("repack", layout)
    assert plan.mode == "repack" and not plan.use_extra_bufts
    assert plan.repacked == ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"]
    assert cpu.plan("off", layout).use_extra_bufts is False
    assert cpu.plan("on", layout).use_extra_bufts is True


@pytest.mark.model
def test_forced_amx_with_extra_buffers_on_probes_and_falls_back_when_the_probe_crashes(monkeypatch) -> None:
    """An AMX build asked for `on` runs a real probe child first; a crashing one means `repack`."""
    info = type("Info", (), {"id": "smollm2", "path": embedded_model_path()})()
    real_amx = "AMX" in cpu.extra_buffer_types()
    monkeypatch.setattr(cpu, "extra_buffer_types", lambda: ["AMX", "CPU_REPACK"])
    survived = cpu.choose_buffers(info, "on", threads=2)  # the real probe child
    if real_amx:  # on a real AMX machine the probe may crash: then garrison must not take that path
        assert survived.mode in ("on", "repack")
    else:  # no AMX kernels here: the probe passes and "on" stands
        assert survived.mode == "on" and survived.use_extra_bufts

    def crashing_probe(path: Path, mode: str, threads: int) -> cpu.ProbeResult:
        assert mode == "on"
        return cpu.run_child([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], timeout_s=60)

    monkeypatch.setattr(cpu, "run_probe", crashing_probe)
    fallback = cpu.choose_buffers(info, "on", threads=2)
    assert fallback.mode == "repack" and not fallback.use_extra_bufts
    assert cpu.choose_buffers(info, "auto", threads=2).mode == "repack"  # auto never asks for AMX


@pytest.mark.model
def test_probe_decodes_in_each_mode() -> None:
    amx = "AMX" in cpu.extra_buffer_types()
    for mode in ("on", "repack", "off"):
        result = cpu.run_probe(embedded_model_path(), mode, threads=2, tokens=4)
        if mode == "on" and amx and not result.ok:  # the known AMX crash, reported by the child, not suffered
            assert "crashed" in result.detail
            continue
        assert result.ok, result.detail
        assert result.decode_tok_s > 0 and result.prefill_tok_s > 0
        assert result.buffer_types  # e.g. {"CPU_Mapped": 92.1}


def test_usable_cores_follow_the_cgroup_cpu_quota(tmp_path: Path) -> None:
    """`docker run --cpus 1.5` or a Kubernetes CPU limit caps the default threads, v2 and v1, tightest wins."""
    import os

    affinity = len(os.sched_getaffinity(0))
    root, own = tmp_path / "cgroup", tmp_path / "self-cgroup"
    pod = root / "kubepods" / "pod1"
    pod.mkdir(parents=True)
    own.write_text("0::/kubepods/pod1\n")
    (pod / "cpu.max").write_text("max 100000\n")  # no limit on the leaf ...
    (root / "kubepods" / "cpu.max").write_text("150000 100000\n")  # ... 1.5 cores on its parent
    assert cpu.cgroup_cpu_quota(root, own) == 1.5
    assert cpu.usable_cores(root, own) == min(affinity, 2)
    (pod / "cpu.max").write_text("50000 100000\n")
    assert cpu.usable_cores(root, own) == 1
    (pod / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_cpu_quota(root, own) is None
    assert cpu.usable_cores(root, own) == affinity
    v1 = root / "cpu" / "docker" / "abc"
    v1.mkdir(parents=True)
    own.write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu" / "docker" / "cpu.cfs_quota_us").write_text("100000\n")
    (root / "cpu" / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.cgroup_cpu_quota(root, own) == 1.0
    assert cpu.cgroup_cpu_quota(root, tmp_path / "missing") is None
