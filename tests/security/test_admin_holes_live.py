"""The admin API through the real server: it acts only inside the server's environment, and bad values are 400s."""

from __future__ import annotations

import copy
import string

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


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/admin/keys", {"name": "x", "expires": "99999999d"}, "expires"),
    ("POST", "/admin/keys", {"name": "x", "expires": "1" + "0" * 400 + "s"}, "expires"),
    ("POST", "/admin/keys", {"name": "x", "expires": "9999-12-31T23:30:00-01:00"}, "expires"),
    ("POST", "/admin/keys", {"name": "x", "expires": "10000-01-01"}, "expires"),
    ("POST", "/admin/keys", {"name": "x", "rpm": 10**20}, "rpm"),
    ("POST", "/admin/keys", {"name": "x", "daily_tokens": 2**63}, "daily_tokens"),
    ("POST", "/admin/keys/{admin}/rotate", {"grace": "99999999999w"}, "grace"),
    ("POST", "/admin/keys/{admin}/rotate", {"grace": "9" * 400 + "s"}, "grace"),
    ("GET", "/admin/audit?since=9999-12-31T23:59:59-01:00", None, "since"),
    ("GET", "/admin/audit?until=0001-01-01T00:00:00%2B01:00", None, "until"),
    ("GET", "/admin/audit?since=2026-02-30", None, "since"),
    ("GET", "/admin/audit?after=99999999999999999999999", None, "after"),
    ("GET", "/admin/usage?since=9999-12-31T23:59:59-05:00", None, "since"),
    ("GET", "/admin/usage?until=0001-01-01T00:00:00%2B05:00", None, "until"),
])
def test_out_of_range_admin_values_are_400s_naming_the_field(live_server, method, path, body, field) -> None:
    admin_id = live_server.api_key.split("_")[2]
    response = _admin(live_server, method, path.format(admin=admin_id), json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and field in error["message"], error
    assert live_server.app.state.security.keys.get(admin_id).rotated_at is None


def test_fuzzed_admin_parameters_never_answer_500(live_server) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    when = st.one_of(
        st.dates().map(str), st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        st.text(max_size=30),
    )
    duration = st.one_of(
        st.tuples(st.integers(min_value=0, max_value=10**30), st.sampled_from("smhdw")).map(
            lambda t: f"{t[0]}{t[1]}"),
        st.text(max_size=20),
    )
    # JSON has no NaN or infinity: a client cannot send them (the strict schemas refuse such literals anyway)
    finite = st.floats(allow_nan=False, allow_infinity=False)
    number = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), finite, st.text(max_size=5))
    def words(size: int):  # type: ignore[no-untyped-def]
        """Any text JSON can carry, unpaired surrogates included (bodies only: URLs cannot hold them)."""
        return st.text(st.characters(exclude_categories=()), max_size=size)

    create = st.fixed_dictionaries({"name": words(120)}, optional={
        "env": words(10), "models": st.lists(words(10), max_size=3),
        "scopes": st.lists(words(10), max_size=3), "clearance": words(12),
        "rpm": number, "tpm": number, "daily_tokens": number, "expires": st.one_of(when, duration),
    })
    query = st.fixed_dictionaries({}, optional={
        "since": when, "until": when, "key": st.text(max_size=20), "after": number, "limit": number,
        "decision": st.text(max_size=6)})
    grace = st.fixed_dictionaries({}, optional={"grace": st.one_of(duration, st.integers())})
    victim = live_server.app.state.security.keys.create(name="fuzz-victim", env="dev").record.id
    key_id = st.one_of(st.just(victim), st.text(alphabet=string.ascii_letters + string.digits + "-._~", max_size=20))
    call = st.one_of(
        st.tuples(st.just("POST"), st.just("/admin/keys"), create, st.just({})),
        st.tuples(st.just("POST"), key_id.map(lambda k: f"/admin/keys/{k}/rotate"), grace, st.just({})),
        st.tuples(st.just("GET"), st.sampled_from(["/admin/audit", "/admin/usage"]), st.none(), query),
        st.tuples(st.just("GET"), key_id.map(lambda k: f"/admin/keys/{k}"), st.none(), st.just({})),
    )

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(call)
    def never_500(case) -> None:  # type: ignore[no-untyped-def]
        method, path, body, params = case
        response = _admin(live_server, method, path, json=body, params=params)
        assert response.status_code < 500, (case, response.text)

    never_500()
