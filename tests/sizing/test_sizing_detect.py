"""`--here`: parsing what the driver reports and matching it to the catalog."""

from __future__ import annotations

from garrison.sizing import catalog
from garrison.sizing.detect import Gpu, Machine, machine_hardware, match_catalog, parse_nvidia_smi
from garrison.sizing.planner import here_report

GIB = 1024**3


def test_parse_nvidia_smi_csv() -> None:
    out = "NVIDIA GeForce RTX 4090, 24564\nNVIDIA GeForce RTX 4090, 24564\n"
    assert parse_nvidia_smi(out) == [Gpu("NVIDIA GeForce RTX 4090", 24564 * 1024**2)] * 2
    assert parse_nvidia_smi("") == []


def test_driver_names_match_catalog_entries_word_for_word() -> None:
    assert match_catalog("NVIDIA H100 80GB HBM3", "cuda") == catalog.find_hardware("h100-80gb")
    assert match_catalog("NVIDIA A100-SXM4-40GB", "cuda") == catalog.find_hardware("a100-40gb")
    assert match_catalog("NVIDIA GeForce RTX 3090", "cuda") == catalog.find_hardware("rtx-3090")
    assert match_catalog("NVIDIA L40S", "cuda") is None  # "L4" must not match "L40S"
    assert match_catalog("Apple M3 Max", "metal") == catalog.find_hardware("apple-m3-max-64gb")


def test_machine_with_two_gpus_fits_models_across_both() -> None:
    machine = Machine("Test CPU", 16, 64 * GIB, (Gpu("NVIDIA GeForce RTX 4090", 24564 * 1024**2),) * 2)
    devices = machine_hardware(machine)
    assert [(hw.kind, n) for hw, n in devices] == [("cuda", 2), ("cpu", 1)]
    assert devices[0][0].bandwidth_bytes_per_s == 1008e9  # borrowed from the matched catalog entry
    rows = {r.model.id: r for r in here_report(devices)}
    small = rows["llama-3.1-8b"].fit
    assert small is not None and small.best_precision is not None and small.best_precision.name == "fp16"
    big = rows["llama-3.1-70b"].fit
    assert big is not None and big.hardware.kind == "cuda" and big.devices == 2
    assert rows["llama-3.1-405b"].fit is None or rows["llama-3.1-405b"].fit.hardware.kind == "cpu"


def test_cpu_only_machine_uses_ram() -> None:
    devices = machine_hardware(Machine("Test CPU", 4, 8 * GIB))
    rows = {r.model.id: r for r in here_report(devices)}
    assert rows["smollm2-135m"].fit is not None and rows["smollm2-135m"].fit.hardware.kind == "cpu"
    assert rows["llama-3.1-70b"].fit is None
