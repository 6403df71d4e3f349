"""`garrison doctor`: facts about the machine and install, a list of problems, exit 0 or 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from garrison.doctor import diagnose
from garrison.settings import load_settings


def _doctor(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "garrison", "doctor", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=600)


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "server.secret").write_text("s")
    (home / "server.secret").chmod(0o600)
    return home


def test_a_private_home_and_pinned_models_are_all_well(tmp_path: Path) -> None:
    home = _home(tmp_path)
    done = _doctor("--json", "--no-probe", home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == []
    assert report["cpu"]["cores"] >= 1 and report["cpu"]["threads"] >= 1
    assert report["home"]["mode"] == "0700" and report["home"]["files"] == {"server.secret": "0600"}
    assert "CPU" in report["llama_cpp"]["system_info"]
    assert report["llama_cpp"]["cpu_extra_buffers_resolved"] in ("on", "repack", "off")
    assert report["llama_cpp"]["cache_type_k"] == "auto" and report["llama_cpp"]["cache_type_k_resolved"] in (
        "f16", "bf16")
    assert [m["digest"] for m in report["models"]] == ["not pinned"]  # the embedded model


def test_open_modes_and_a_changed_model_are_listed_with_exit_1(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.chmod(0o755)
    (home / "server.secret").chmod(0o644)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF not really")
    (tmp_path / "garrison.toml").write_text(
        f'[[models]]\nid = "pinned"\npath = "{model}"\nsha256 = "{"0" * 64}"\n')
    done = subprocess.run([sys.executable, "-m", "garrison", "doctor", "--no-probe", "--home", str(home),
                           "--config", str(tmp_path / "garrison.toml")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1
    assert "3 problem(s)" in done.stdout
    assert f"chmod 700 {home}" in done.stdout
    assert f"chmod 600 {home / 'server.secret'}" in done.stdout
    assert "model 'pinned': sha256" in done.stdout and "pins 000" in done.stdout


@pytest.mark.model
def test_the_decode_probe_runs_in_a_child_and_reports_speed_against_the_bandwidth_bound(tmp_path: Path) -> None:
    report = diagnose(load_settings(home=_home(tmp_path), engine={"threads": 2}), probe_tokens=8)
    decode = report.facts["decode"]
    assert decode["ok"], decode
    assert decode["decode_tok_s"] > 0 and decode["bandwidth_bound_tok_s"] > 0
    assert decode["model_bytes_per_token"] > 50_000_000  # the whole 98 MB model is read per token
    assert decode["buffer_types"]  # which weight buffers llama.cpp used
    assert report.ok, report.problems
