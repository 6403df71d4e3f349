"""`garrison models list` probes each upstream of a remote model and shows its state (no model loaded)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from typer.testing import CliRunner

from garrison.cli import build_app

runner = CliRunner()


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_models_list_shows_an_unreachable_replica(tmp_path: Path) -> None:
    url = _refused_url()
    config = tmp_path / "garrison.toml"
    config.write_text(
        'default_model = false\n[engine]\nembeddings = false\n'
        f'[[models]]\nid = "remote"\nengine = "openai"\nupstreams = ["{url}"]\nupstream_model = "big"\n'
        'health = { timeout = 1.0 }\n'
    )
    result = runner.invoke(build_app(), ["models", "list", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout[result.stdout.index("["):])
    assert (row["id"], row["engine"], row["upstream"]["upstream_model"]) == ("remote", "openai", "big")
    [replica] = row["upstream"]["replicas"]
    assert (replica["url"], replica["state"]) == (url, "unhealthy")
    assert replica["reason"] == "cannot connect (ConnectionRefusedError)"
    table = runner.invoke(build_app(), ["models", "list", "--config", str(config)])
    assert table.exit_code == 0 and "unhealthy" in table.stdout


def test_models_list_refuses_a_missing_api_key_variable(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("NO_SUCH_UPSTREAM_KEY", raising=False)
    config = tmp_path / "garrison.toml"
    config.write_text(
        'default_model = false\n[engine]\nembeddings = false\n'
        '[[models]]\nid = "remote"\nengine = "ollama"\nupstreams = ["http://127.0.0.1:9"]\n'
        'api_key_env = "NO_SUCH_UPSTREAM_KEY"\n'
    )
    result = runner.invoke(build_app(), ["models", "list", "--config", str(config)])
    assert result.exit_code == 2
    assert "NO_SUCH_UPSTREAM_KEY" in result.output
