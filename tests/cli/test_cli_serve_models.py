"""`garrison serve` and `garrison models` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from garrison.cli import build_app
from garrison.registry import embedded_model_path

runner = CliRunner()


def test_help_documents_every_serve_option() -> None:
    result = runner.invoke(build_app(), ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--host", "--port", "--config", "--env", "--no-auth", "--threads", "--context-length",
                   "--max-concurrent", "--max-queue", "--n-gpu-layers", "--max-body-bytes"):
        assert option in result.output


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    result = runner.invoke(build_app(), ["serve", "--no-auth", "--host", "0.0.0.0", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_models_list_json(tmp_path: Path) -> None:
    result = runner.invoke(build_app(), ["models", "list", "--json"], env={"GARRISON_HOME": str(tmp_path),
                                                                          "GARRISON_CONFIG": str(tmp_path / "x")})
    assert result.exit_code == 0
    rows = {row["id"]: row for row in json.loads(result.output)}
    model = rows["smollm2-135m-instruct"]
    assert model["quantization"] == "Q4_1" and len(model["sha256"]) == 64 and model["size_bytes"] > 90_000_000


def test_models_add_pins_the_digest_and_serves_it(tmp_path: Path) -> None:
    config = tmp_path / "garrison.toml"
    added = runner.invoke(
        build_app(), ["models", "add", "my-copy", str(embedded_model_path()), "--config", str(config)]
    )
    assert added.exit_code == 0
    assert "sha256" in config.read_text()
    listed = runner.invoke(build_app(), ["models", "list", "--json", "--config", str(config)],
                           env={"GARRISON_HOME": str(tmp_path)})
    assert "my-copy" in {row["id"] for row in json.loads(listed.output)}


def test_tampered_pin_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "garrison.toml"
    config.write_text(f'[[models]]\nid = "x"\npath = "{embedded_model_path()}"\nsha256 = "{"a" * 64}"\n')
    proc = subprocess.run([sys.executable, "-m", "garrison", "serve", "--config", str(config), "--home",
                           str(tmp_path), "--port", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "sha256" in proc.stderr and "Traceback" not in proc.stderr
