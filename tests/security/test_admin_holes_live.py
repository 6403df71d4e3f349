"""The admin API through the real server: it acts only inside the server's environment, and bad values are 400s."""

from __future__ import annotations

import copy

import httpx
import pytest

from garrison.audit.log import AuditEvent

pytestmark = pytest.mark.model


def _admin(live_server, method: str, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.request(method, f"{live_server.url}{path}", headers=live_server.headers, timeout=60, **kwargs)


@pytest.fixture
def prod_key(live_server):  # type: ignore[no-untyped-def]
    """A prod admin key in the dev server's store, as an operator's CLI on a shared store would make it."""
    return live_server.app.state.security.keys.create(
        name="prod-admin", env="prod", scopes=["admin", "chat"]
    )


def test_a_dev_admin_cannot_create_a_key_for_another_environment(live_server) -> None:
    response = _admin(live_server, "POST", "/admin/keys",
                      json={"name": "x", "env": "prod", "scopes": ["admin", "chat"]})
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["param"] == "env" and "'dev'" in error["message"] and "'prod'" in error["message"]
    names = [k.name for k in live_server.app.state.security.keys.all()]
    assert "x" not in names
    same_env = _admin(live_server, "POST", "/admin/keys", json={"name": "y", "env": "dev"})
    assert same_env.status_code == 201 and same_env.json()["env"] == "dev"


def test_keys_of_another_environment_are_invisible_and_untouchable(live_server, prod_key) -> None:
    key_id = prod_key.record.id
    listed = _admin(live_server, "GET", "/admin/keys").json()["data"]
    assert listed and {k["env"] for k in listed} == {"dev"}
    assert key_id not in {k["id"] for k in listed}
    for method, path, body in (("GET", f"/admin/keys/{key_id}", None),
                               ("POST", f"/admin/keys/{key_id}/revoke", None),
                               ("POST", f"/admin/keys/{key_id}/rotate", {"grace": "1h"})):
        response = _admin(live_server, method, path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert "key" not in response.json()  # no new secret handed out
    record = live_server.app.state.security.keys.get(key_id)
    assert record.revoked_at is None and record.rotated_at is None


def test_usage_and_audit_views_show_only_the_servers_environment(live_server, prod_key) -> None:
    security = live_server.app.state.security
    security.usage.record(prod_key.record.id, "some-model", "2026-01-02", 11, 22)
    other = copy.copy(security.audit)  # the same chain and signing key, written as a prod server would
    other.env = "prod"
    other.append(AuditEvent(request_id="prod-request", method="POST", route="/v1/chat/completions",
                            status=200, key_id=prod_key.record.id))
    usage = _admin(live_server, "GET", "/admin/usage").json()["data"]
    assert prod_key.record.id not in {u["key_id"] for u in usage}
    assert _admin(live_server, "GET", f"/admin/usage?key={prod_key.record.id}").json()["data"] == []
    audit = _admin(live_server, "GET", "/admin/audit?limit=1000").json()["data"]
    assert audit and {r["env"] for r in audit} == {"dev"}
    assert _admin(live_server, "GET", f"/admin/audit?key={prod_key.record.id}").json()["data"] == []

