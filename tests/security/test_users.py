"""Console users: Argon2id hashes, grants like a key's, personal keys within them; `garrison users`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from garrison.cli.users import register
from garrison.console.oidc import OidcClient
from garrison.errors import InvalidRequest, PermissionDenied
from garrison.security import Security, connect
from garrison.security.principal import Limits
from garrison.security.users import Grants, UserStore
from garrison.settings import OidcRule, OidcSettings, load_settings


@pytest.fixture
def security(tmp_path: Path) -> Iterator[Security]:
    opened = connect(load_settings(home=tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def users(security: Security) -> UserStore:
    return UserStore(security.store)


def test_passwords_are_stored_as_argon2id_and_verified(users: UserStore) -> None:
    user = users.create(username="alice", env="dev", grants=Grants(), password="a very long secret")
    stored = users._store.fetchone("SELECT password_hash FROM users WHERE id = ?", (user.id,))
    assert stored is not None and stored[0].startswith("$argon2id$") and "a very long secret" not in stored[0]
    assert users.authenticate("dev", "alice", "a very long secret") == user
    assert users.authenticate("dev", "alice", "a very long secreT") is None
    assert users.authenticate("prod", "alice", "a very long secret") is None  # another environment
    with pytest.raises(InvalidRequest, match="12 characters"):
        users.create(username="bob", env="dev", grants=Grants(), password="short")
    with pytest.raises(InvalidRequest, match="already exists"):
        users.create(username="alice", env="dev", grants=Grants(), password="another long secret")


def test_a_user_acts_as_a_principal_with_its_grants(users: UserStore) -> None:
    grants = Grants(role="user", scopes=("chat", "embeddings"), models=("m1",), clearance="internal",
                    limits=Limits(rpm=5))
    user = users.create(username="carl", env="dev", grants=grants, password="a very long secret")
    principal = user.principal()
    assert principal.key_id == f"usr_{user.id}" and principal.name == "user:carl"
    assert principal.has_scope("embeddings") and not principal.has_scope("admin")
    assert principal.allows_model("m1") and not principal.allows_model("m2")
    assert principal.cleared_for("internal") and not principal.cleared_for("confidential")
    assert principal.limits.rpm == 5
    assert principal.allows_collection("anything")  # like a key: every collection unless named


def test_a_users_collections_reach_its_principal_and_its_personal_keys(users: UserStore, security: Security) -> None:
    user = users.create(username="cleo", env="dev", password="a very long secret",
                        grants=Grants(collections=("hr", "uploads")))
    assert user.principal().collections == frozenset({"hr", "uploads"})
    assert user.principal().allows_collection("hr") and not user.principal().allows_collection("finance")
    key = users.create_key(user, security.keys, name="k", scopes=["chat"], models=["*"], clearance="public",
                           limits=Limits())
    assert key.record.collections == ("hr", "uploads")
    regranted = users.set_grants(user.id, Grants(collections=("eng",)))
    assert regranted.principal().collections == frozenset({"eng"})
    none = users.set_grants(user.id, Grants(collections=()))  # a user who may read no documents at all
    assert none.collections == () and not none.principal().allows_collection("eng")
    with pytest.raises(InvalidRequest, match="collections"):
        users.set_grants(user.id, Grants(collections=("a,b",)))


def test_personal_keys_are_capped_by_the_users_grants(users: UserStore, security: Security) -> None:
    user = users.create(username="dina", env="dev", password="a very long secret",
                        grants=Grants(scopes=("chat",), models=("m1",), clearance="internal",
                                      limits=Limits(daily_tokens=1000)))
    with pytest.raises(PermissionDenied, match="scopes"):
        users.create_key(user, security.keys, name="k", scopes=["chat", "admin"], models=["m1"],
                         clearance="public", limits=Limits())
    with pytest.raises(PermissionDenied, match="models"):
        users.create_key(user, security.keys, name="k", scopes=["chat"], models=["m2"], clearance="public",
                         limits=Limits())
    with pytest.raises(PermissionDenied, match="clearance"):
        users.create_key(user, security.keys, name="k", scopes=["chat"], models=["m1"],
                         clearance="confidential", limits=Limits())
    issued = users.create_key(user, security.keys, name="k", scopes=["chat"], models=["m1"], clearance="internal",
                              limits=Limits(daily_tokens=5000))
    assert issued.record.limits.daily_tokens == 1000  # never above the owner's own budget
    assert [k.id for k in users.keys_of(user.id, security.keys)] == [issued.record.id]
    assert users.owners()[issued.record.id] == "dina"


def test_single_sign_on_claims_map_to_role_clearance_and_scopes() -> None:
    client = OidcClient(OidcSettings(
        issuer="http://idp.test", client_id="g", default_clearance="public", default_scopes=["chat"],
        rules=[
            OidcRule(claim="groups", value="admins", role="admin"),
            OidcRule(claim="groups", value="hr", clearance="confidential", scopes=["embeddings"]),
            OidcRule(claim="dept", value="legal", clearance="internal", models=["m1"]),
        ],
    ), client_secret="s")
    staff = client.grants({"groups": ["staff"]})
    assert (staff.role, staff.clearance, staff.scopes) == ("user", "public", ("chat",))
    hr_admin = client.grants({"groups": ["hr", "admins"], "dept": "legal"})
    assert hr_admin.role == "admin" and hr_admin.clearance == "confidential"  # the highest level wins
    assert hr_admin.scopes == ("chat", "embeddings") and hr_admin.models == ("*",)
    strict = OidcClient(OidcSettings(issuer="http://idp.test", client_id="g", require_rule=True), client_secret="s")
    with pytest.raises(Exception, match="no sign-in rule matches"):
        strict.grants({"groups": ["staff"]})


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GARRISON_CONFIG", raising=False)
    monkeypatch.setenv("GARRISON_HOME", str(tmp_path / "home"))
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    register(app)
    return app


def test_users_cli_create_list_disable_reset(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["users", "create", "erin", "--role", "admin", "--clearance", "internal",
                               "--collections", "hr, eng", "--generate", "--json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["role"] == "admin" and len(created["password"]) >= 12
    assert created["collections"] == ["hr", "eng"]
    piped = runner.invoke(cli, ["users", "create", "fred", "--password-stdin"], input="fred's long password\n")
    assert piped.exit_code == 0, piped.output
    listed = json.loads(runner.invoke(cli, ["users", "list", "--json"]).stdout)
    assert [u["username"] for u in listed] == ["erin", "fred"] and "password" not in listed[0]
    assert runner.invoke(cli, ["users", "disable", "fred"]).exit_code == 0
    reset = runner.invoke(cli, ["users", "reset", "erin", "--generate"])
    assert reset.exit_code == 0 and "New password (shown once)" in reset.stdout
    new_password = reset.stdout.strip().splitlines()[-1]
    opened = connect(load_settings(home=tmp_path / "home"))
    store = UserStore(opened.store)
    assert store.authenticate("dev", "erin", new_password) is not None
    assert store.authenticate("dev", "erin", created["password"]) is None
    assert store.authenticate("dev", "fred", "fred's long password") is None  # disabled
    opened.close()
    unknown = runner.invoke(cli, ["users", "disable", "nobody"])
    assert unknown.exit_code == 1 and "no user named 'nobody'" in unknown.output
    short = runner.invoke(cli, ["users", "create", "gus", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "12 characters" in short.output
