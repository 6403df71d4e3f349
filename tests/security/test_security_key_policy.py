"""Keys carry a guardrail policy: stored by migration 0003, set by the CLI and the admin API, checked by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from garrison.cli import build_app
from garrison.errors import InvalidRequest
from garrison.security import Security, connect
from garrison.settings import load_settings


def test_policy_is_stored_and_reaches_the_principal(security: Security) -> None:
    issued = security.keys.create(name="support-bot", env="prod", policy="strict")
    principal = security.guard.authenticate(f"Bearer {issued.token}")
    assert principal.policy == "strict"
    assert security.keys.get(issued.record.id).to_dict(0)["policy"] == "strict"
    assert security.keys.create(name="plain", env="prod").record.policy is None
    with pytest.raises(InvalidRequest, match="policy name"):
        security.keys.create(name="bad", env="prod", policy="no spaces allowed")


def test_admin_api_sets_and_checks_the_policy(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = client.post("/admin/keys", headers=admin_headers, json={"name": "bot", "policy": "prod"})
    assert created.status_code == 201 and created.json()["policy"] == "prod"
    unknown = client.post("/admin/keys", headers=admin_headers, json={"name": "bot", "policy": "nope"})
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["param"] == "policy" and "unknown guardrail policy 'nope'" in error["message"]


def test_cli_keys_create_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GARRISON_HOME", str(tmp_path / "home"))
    (tmp_path / "garrison.toml").write_text(
        '[[guardrails.policies]]\nname = "support"\n[[guardrails.policies.rules]]\nwhat = "pii"\naction = "redact"\n'
    )
    runner = CliRunner()
    made = runner.invoke(build_app(), ["keys", "create", "--name", "s", "--policy", "support", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["policy"] == "support"
    refused = runner.invoke(build_app(), ["keys", "create", "--name", "s", "--policy", "nope"])
    assert refused.exit_code == 1 and "unknown guardrail policy 'nope' (known: prod, strict, support)" in refused.output
    security = connect(load_settings())
    try:
        assert [k.policy for k in security.keys.all()] == ["support"]
    finally:
        security.close()
