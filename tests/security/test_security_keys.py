"""Keys: format, hashed storage, rotation with and without grace, revocation, first-start bootstrap."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.errors import ConfigError, InvalidRequest, NotFound, PermissionDenied, Unauthenticated
from garrison.security import Security, is_loopback, setup
from garrison.security.keys import load_server_secret, parse_token
from garrison.settings import Settings


def test_token_names_its_environment_and_id(security: Security) -> None:
    issued = security.keys.create(name="ci", env="staging")
    assert issued.token.startswith(f"gsk_staging_{issued.record.id}_")
    parsed = parse_token(issued.token)
    assert parsed is not None and (parsed.env, parsed.key_id) == ("staging", issued.record.id)
    assert len(issued.token.rsplit("_", 1)[1]) == 40


def test_only_the_keyed_hash_is_stored(security: Security, settings: Settings) -> None:
    issued = security.keys.create(name="ci", env="prod")
    rows = security.store.fetchall("SELECT digest FROM api_key_secrets WHERE key_id = ?", (issued.record.id,))
    assert [r["digest"] for r in rows] == [security.keys.digest(issued.token)]
    assert issued.token.encode() not in settings.sqlite_path.read_bytes()


def test_server_secret_is_private_and_stable(settings: Settings, security: Security) -> None:
    path = settings.home / "server.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_server_secret(path) == load_server_secret(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_server_secret(path)


def test_rotation_without_grace_stops_the_old_secret_now(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], security: Security
) -> None:
    old = new_key()
    key_id = old.split("_")[2]
    new = security.keys.rotate(key_id).token
    assert new != old and new.split("_")[2] == key_id
    assert chat(new).status_code == 200
    response = chat(old)
    assert response.status_code == 401
    assert "rotated out" in response.json()["error"]["message"]


def test_rotation_with_grace_keeps_the_old_secret_for_a_while(
    chat: Callable[..., httpx.Response], new_key: Callable[..., str], security: Security, clock: Any
) -> None:
    old = new_key()
    key_id = old.split("_")[2]
    first = security.keys.rotate(key_id, grace_seconds=600).token
    assert chat(old).status_code == 200
    assert chat(first).status_code == 200
    clock.advance(599)
    assert chat(old).status_code == 200
    clock.advance(1)
    assert chat(old).status_code == 401
    assert chat(first).status_code == 200
    second = security.keys.rotate(key_id, grace_seconds=60).token  # a second rotation prunes dead secrets
    assert chat(first).status_code == 200 and chat(second).status_code == 200
    count = security.store.fetchone("SELECT COUNT(*) FROM api_key_secrets WHERE key_id = ?", (key_id,))
    assert count is not None and count[0] == 2


def test_revoked_or_unknown_keys_cannot_be_rotated(security: Security) -> None:
    issued = security.keys.create(name="x", env="prod")
    security.keys.revoke(issued.record.id)
    with pytest.raises(InvalidRequest, match="is revoked"):
        security.keys.rotate(issued.record.id)
    with pytest.raises(NotFound):
        security.keys.rotate("000000000000")


def test_key_fields_are_validated(security: Security) -> None:
    with pytest.raises(InvalidRequest, match="scopes"):
        security.keys.create(name="x", env="prod", scopes=["root"])
    with pytest.raises(InvalidRequest, match="environment"):
        security.keys.create(name="x", env="qa")
    with pytest.raises(InvalidRequest, match="clearance"):
        security.keys.create(name="x", env="prod", clearance="secret")
    with pytest.raises(InvalidRequest, match="name"):
        security.keys.create(name=" ", env="prod")


def test_clearance_is_enforced_where_a_route_asks_for_it(security: Security) -> None:
    token = security.keys.create(name="x", env="prod", clearance="internal").token
    principal = security.guard.authenticate(f"Bearer {token}")
    security.guard.authorize(principal, "chat", "tiny", clearance="internal")
    with pytest.raises(PermissionDenied, match="has clearance 'internal'; this needs 'confidential'"):
        security.guard.authorize(principal, "chat", "tiny", clearance="confidential")


def test_first_start_creates_one_admin_key_file_0600(settings: Settings, security: Security) -> None:
    path = settings.home / "admin.key"
    assert security.bootstrap_key is not None
    assert path.read_text().strip() == security.bootstrap_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    principal = security.guard.authenticate(f"Bearer {security.bootstrap_key}")
    assert principal.scopes == {"chat", "completions", "embeddings", "metrics", "documents", "documents:write", "admin"}
    again = setup(settings)
    try:
        assert again.bootstrap_key is None  # keys exist: nothing new is created
        assert len(again.keys.all()) == 1
    finally:
        again.close()


def test_bootstrap_happens_per_environment_but_not_after_revocation(tmp_path: Path) -> None:
    home = tmp_path / "h"
    dev = setup(Settings(home=home, auth={"env": "dev"}))
    dev.keys.revoke(dev.keys.all()[0].id)
    dev.close()
    again = setup(Settings(home=home, auth={"env": "dev"}))
    assert again.bootstrap_key is None  # a revoked admin key is not silently replaced
    again.close()
    prod = setup(Settings(home=home, auth={"env": "prod"}))
    assert prod.bootstrap_key is not None and prod.bootstrap_key.startswith("gsk_prod_")
    prod.close()


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--no-auth is refused"):
        setup(Settings(home=tmp_path, host="0.0.0.0", auth={"enabled": False}))
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.com")


def test_authenticate_reports_a_foreign_prefix_for_unknown_keys(security: Security) -> None:
    with pytest.raises(
        Unauthenticated, match="its prefix names the 'dev' environment; this server serves 'prod'"
    ):
        security.guard.authenticate("Bearer gsk_dev_0123456789ab_" + "A" * 40)
