"""The admin API: keys create/list/revoke/rotate, usage and audit query over HTTP, admin scope only."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient

from garrison.security import Security


def test_create_list_revoke_rotate(
    client: TestClient, admin_headers: dict[str, str], chat: Callable[..., httpx.Response]
) -> None:
    created = client.post(
        "/admin/keys",
        headers=admin_headers,
        json={
            "name": "svc",
            "models": ["tiny"],
            "scopes": ["chat"],
            "rpm": 5,
            "expires": "30d",
        },
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    key = created.json()
    assert key["key"].startswith(f"gsk_prod_{key['id']}_")
    assert (key["env"], key["models"], key["scopes"], key["rpm"]) == ("prod", ["tiny"], ["chat"], 5)
    assert key["expires_at"].startswith("2025-07-15")  # 30 days after the fake clock's now
    assert chat(key["key"]).status_code == 200

    listed = client.get("/admin/keys", headers=admin_headers).json()["data"]
    assert {k["id"] for k in listed} == {key["id"], admin_headers["Authorization"].split("_")[2]}
    assert all("key" not in k for k in listed)

    rotated = client.post(
        f"/admin/keys/{key['id']}/rotate", headers=admin_headers, json={"grace": "10m"}
    ).json()
    assert rotated["id"] == key["id"] and rotated["key"] != key["key"]
    assert chat(key["key"]).status_code == 200 and chat(rotated["key"]).status_code == 200

    revoked = client.post(f"/admin/keys/{key['id']}/revoke", headers=admin_headers).json()
    assert revoked["status"] == "revoked"
    assert chat(rotated["key"]).status_code == 401
    assert client.get(f"/admin/keys/{key['id']}", headers=admin_headers).json()["status"] == "revoked"


def test_bad_admin_input_is_a_clear_4xx(client: TestClient, admin_headers: dict[str, str]) -> None:
    assert client.get("/admin/keys/ffffffffffff", headers=admin_headers).status_code == 404
    response = client.post("/admin/keys", headers=admin_headers, json={"name": "x", "expires": "soon"})
    assert response.status_code == 400
    assert "not a date" in response.json()["error"]["message"]
    response = client.post("/admin/keys", headers=admin_headers, json={"name": "x", "scopes": ["root"]})
    assert response.status_code == 400


def test_usage_and_audit_queries(
    client: TestClient,
    admin_headers: dict[str, str],
    chat: Callable[..., httpx.Response],
    new_key: Callable[..., str],
    security: Security,
) -> None:
    token = new_key(name="bob")
    key_id = token.split("_")[2]
    chat(token)
    chat(token, model="big")
    chat(None)
    usage = client.get(f"/admin/usage?key={key_id}&since=2025-06-01", headers=admin_headers).json()["data"]
    assert [(u["model"], u["requests"], u["total_tokens"]) for u in usage] == [
        ("big", 1, 12),
        ("tiny", 1, 12),
    ]
    assert client.get("/admin/usage?since=2025-07-01", headers=admin_headers).json()["data"] == []

    denied = client.get("/admin/audit?decision=deny", headers=admin_headers).json()
    assert [r["status"] for r in denied["data"]] == [401]
    mine = client.get(f"/admin/audit?key={key_id}", headers=admin_headers).json()["data"]
    assert [(r["event"], r["model"]) for r in mine] == [
        ("request.admitted", "tiny"), ("request.finished", "tiny"),
        ("request.admitted", "big"), ("request.finished", "big"),
    ]
    page = client.get("/admin/audit?limit=2", headers=admin_headers).json()
    rest = client.get(f"/admin/audit?after={page['last_seq']}", headers=admin_headers).json()
    assert [r["seq"] for r in page["data"] + rest["data"]] == list(
        range(1, 1 + len(page["data"]) + len(rest["data"]))
    )
    assert client.get("/admin/audit?since=2030-01-01", headers=admin_headers).json()["data"] == []

    verdict = client.get("/admin/audit/verify", headers=admin_headers).json()
    assert (
        verdict["ok"] is True and verdict["records"] == security.audit.count() - 1
    )  # this call is not yet in
