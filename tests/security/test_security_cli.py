"""`garrison keys`, `usage` and `audit` on the local store (GARRISON_HOME), for people and for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from garrison.audit import AuditEvent
from garrison.cli.security import register
from garrison.errors import Unauthenticated
from garrison.security import connect
from garrison.settings import load_settings


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GARRISON_CONFIG", raising=False)
    monkeypatch.setenv("GARRISON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GARRISON_AUTH__ENV", "staging")
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    register(app)
    return app


def _run(cli: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_keys_create_list_revoke_rotate(cli: typer.Typer, tmp_path: Path) -> None:
    created = json.loads(
        _run(
            cli,
            "keys",
            "create",
            "--name",
            "ci",
            "--models",
            "a,b",
            "--scopes",
            "chat",
            "--clearance",
            "internal",
            "--rpm",
            "10",
            "--tpm",
            "1000",
            "--daily-tokens",
            "5000",
            "--expires",
            "2099-01-01",
            "--json",
        )
    )
    assert {"id", "key", "name", "env"} <= set(created)
    assert created["key"].startswith(f"gsk_staging_{created['id']}_")  # env from GARRISON_AUTH__ENV
    assert (created["models"], created["scopes"], created["clearance"]) == (["a", "b"], ["chat"], "internal")
    assert (created["rpm"], created["tpm"], created["daily_tokens"]) == (10, 1000, 5000)
    assert created["expires_at"].startswith("2099-01-01T00:00:00")
    prod = json.loads(_run(cli, "keys", "create", "--name", "p", "--env", "prod", "--json"))
    assert prod["key"].startswith("gsk_prod_")

    human = _run(cli, "keys", "create", "--name", "human")
    secret_line = human.strip().splitlines()[-1]
    assert secret_line.startswith("gsk_staging_") and "shown once" in human

    listed = json.loads(_run(cli, "keys", "list", "--json"))
    assert {k["name"] for k in listed} == {"ci", "p", "human"}
    table = _run(cli, "keys", "list")
    assert created["id"] in table
    for secret in (created["key"], prod["key"], secret_line):
        assert secret not in table and secret.rsplit("_", 1)[1] not in json.dumps(listed)

    rotated = json.loads(_run(cli, "keys", "rotate", created["id"], "--grace", "10m", "--json"))
    assert rotated["id"] == created["id"] and rotated["key"] != created["key"]
    assert json.loads(_run(cli, "keys", "revoke", created["id"], "--json"))["status"] == "revoked"

    security = connect(load_settings())
    try:
        with pytest.raises(Unauthenticated, match="was revoked"):
            security.guard.authenticate(f"Bearer {rotated['key']}")
    finally:
        security.close()


def test_cli_errors_are_one_line_and_nonzero(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["keys", "revoke", "ffffffffffff"])
    assert result.exit_code == 1
    assert "no API key with id 'ffffffffffff'" in result.output
    result = CliRunner().invoke(cli, ["keys", "create", "--name", "x", "--scopes", "root"])
    assert result.exit_code == 1 and "scopes must be some of" in result.output
    result = CliRunner().invoke(cli, ["keys", "create", "--name", "x", "--expires", "yesterday"])
    assert result.exit_code == 1 and "not a date" in result.output


def test_usage_and_audit_commands(cli: typer.Typer, tmp_path: Path) -> None:
    created = json.loads(_run(cli, "keys", "create", "--name", "ci", "--json"))
    security = connect(load_settings())
    try:
        principal = security.guard.authenticate(f"Bearer {created['key']}")
        security.guard.record_usage(principal, "tiny", 11, 22)
        for status in (200, 403):
            decision = "allow" if status == 200 else "deny"
            security.audit.append(
                AuditEvent(
                    request_id=f"r{status}",
                    method="POST",
                    route="/v1/chat/completions",
                    status=status,
                    decision=decision,
                    key_id=created["id"],
                    key_name="ci",
                    model="tiny",
                )
            )
    finally:
        security.close()

    usage = json.loads(_run(cli, "usage", "--key", created["id"], "--json"))
    assert [(u["model"], u["prompt_tokens"], u["completion_tokens"]) for u in usage] == [("tiny", 11, 22)]
    assert json.loads(_run(cli, "usage", "--since", "2999-01-01", "--json")) == []
    assert "tiny" in _run(cli, "usage")

    assert "audit log intact: 2 records" in _run(cli, "audit", "verify")
    lines = _run(cli, "audit", "export", "--format", "jsonl").strip().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r200", "r403"]
    out = tmp_path / "audit.csv"
    _run(
        cli,
        "audit",
        "export",
        "--format",
        "csv",
        "--since",
        "2000-01-01",
        "--until",
        "2999-01-01",
        "-o",
        str(out),
    )
    rows = out.read_text().splitlines()
    assert rows[0].startswith("seq,ts,request_id") and len(rows) == 3
    assert _run(cli, "audit", "export", "--until", "2000-01-01") == ""
    bad = CliRunner().invoke(cli, ["audit", "export", "--format", "xml"])
    assert bad.exit_code == 2
