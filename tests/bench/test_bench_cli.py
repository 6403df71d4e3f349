"""The `garrison bench` command group: running a sweep, compare, clear errors, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

import garrison
from garrison.cli.bench import register

FAST = "ttft=5,itl=1,tokens=4"
APP = """
import typer
from garrison.cli.bench import register
app = typer.Typer()
@app.callback()
def root() -> None:
    '''garrison.'''
register(app)
app()
"""


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """garrison."""

    register(app)
    return app


def test_missing_url_or_model_is_a_clear_usage_error() -> None:
    result = CliRunner().invoke(make_app(), ["bench"])
    assert result.exit_code == 2
    assert "--url and --model are required" in result.output


def test_bad_flag_values_are_usage_errors() -> None:
    args = ["bench", "--url", "http://127.0.0.1:1", "--model", "m", "--concurrency", "2", "--rate", "1"]
    result = CliRunner().invoke(make_app(), args)
    assert result.exit_code == 2
    assert "not both" in result.output


def test_sweep_then_compare(scripted_server: str, tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("a", "b"):
        args = ["bench", "--url", scripted_server, "--model", FAST, "--concurrency", "1,2"]
        args += ["--requests", "3", "--output-tokens", "4", "--no-progress", "--out", str(tmp_path / name)]
        result = runner.invoke(make_app(), args)
        assert result.exit_code == 0, result.output
        assert "sweep summary" in result.output
        assert (tmp_path / name / "results.json").is_file() and (tmp_path / name / "latency.png").is_file()
    result = runner.invoke(
        make_app(), ["bench", "compare", str(tmp_path / "a"), str(tmp_path / "b" / "results.json")]
    )
    assert result.exit_code == 0, result.output
    assert "B/A" in result.output and "TTFT p50 ms" in result.output


def test_a_run_where_everything_fails_exits_1_but_writes_results(
    scripted_server: str, tmp_path: Path
) -> None:
    args = ["bench", "--url", scripted_server, "--model", "status=500", "--requests", "2", "--warmup", "0"]
    result = CliRunner().invoke(make_app(), [*args, "--no-progress", "--out", str(tmp_path)])
    assert result.exit_code == 1
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert doc["levels"][0]["summary"]["errors"] == {"http_500": 2}


def test_ctrl_c_writes_what_was_measured(
    scripted_server: str, truth: Callable[[], list[dict[str, Any]]], tmp_path: Path
) -> None:
    src = str(Path(garrison.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    args = ["bench", "--url", scripted_server, "--model", "ttft=20,itl=2,tokens=4", "--requests", "100000"]
    args += ["--warmup", "0", "--out", str(tmp_path)]
    already = len(truth())  # the scripted server is shared with earlier tests
    process = subprocess.Popen(
        [sys.executable, "-c", APP, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while len(truth()) < already + 5 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr.decode()
    doc = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert doc["interrupted"] is True
    assert doc["levels"][0]["summary"]["completed"] >= 4
    assert (tmp_path / "requests.csv").is_file()
