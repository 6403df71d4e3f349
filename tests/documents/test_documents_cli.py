"""`garrison docs` on a real garrison.toml, GARRISON_HOME and files: JSON everywhere, changes audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from doc_files import write_docx, write_text
from typer.testing import CliRunner

from garrison.cli import build_app
from garrison.security import connect
from garrison.settings import load_settings


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "handbook"
    write_text(root / "leave.md", "# Leave\nEmployees get 25 days of paid vacation.")
    write_text(root / "deal.md", "---\nclassification: restricted\n---\n# Deal\nThe acquisition price is secret.")
    write_docx(root / "guide.docx", "Security guide", [("Passwords", "Passwords need sixteen characters.")])
    write_text(root / "broken.pdf", "not a pdf")
    config = tmp_path / "garrison.toml"
    config.write_text(
        f'home = "{tmp_path / "home"}"\n[engine]\nthreads = 1\n'
        f'[[documents.roots]]\npath = "{root}"\ncollection = "handbook"\nlabel = "internal"\n'
    )
    monkeypatch.setenv("GARRISON_CONFIG", str(config))
    monkeypatch.delenv("GARRISON_HOME", raising=False)
    return root


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(build_app(), ["docs", *args])
    assert result.exit_code == code, result.output
    return result.stdout


def test_sync_list_search_label_remove_with_json_and_audit(configured: Path) -> None:
    report = json.loads(run("sync", "--json", code=1))  # exit 1: one file was skipped
    assert sorted(report["added"]) == ["handbook/deal.md", "handbook/guide.docx", "handbook/leave.md"]
    assert [f["path"] for f in report["failed"]] == ["handbook/broken.pdf"]
    listed = json.loads(run("list", "--json"))
    assert {d["path"]: d["label"] for d in listed} == {
        "deal.md": "restricted", "guide.docx": "internal", "leave.md": "internal"}
    assert [d["path"] for d in json.loads(run("list", "--json", "--clearance", "internal"))] == [
        "guide.docx", "leave.md"]

    as_internal = json.loads(run("search", "acquisition price", "--clearance", "internal", "--json"))
    assert as_internal and all(h["path"] != "deal.md" for h in as_internal)
    as_restricted = json.loads(run("search", "acquisition price", "--json", "-k", "1"))
    assert as_restricted[0]["path"] == "deal.md"

    leave = next(d for d in listed if d["path"] == "leave.md")
    shown = json.loads(run("show", leave["id"], "--json"))
    assert shown["chunk_list"][0]["heading"] == "Leave"
    relabelled = json.loads(run("label", "handbook/leave.md", "public", "--json"))
    assert (relabelled["previous_label"], relabelled["label"]) == ("internal", "public")
    public = json.loads(run("search", "paid vacation", "--clearance", "public", "--json"))
    assert [h["path"] for h in public] == ["leave.md"]

    removed = json.loads(run("remove", str(configured / "guide.docx"), "--json"))
    assert removed["file_deleted"] is False and (configured / "guide.docx").exists()
    assert "guide.docx" not in {d["path"] for d in json.loads(run("list", "--json"))}
    assert "no document" in CliRunner().invoke(build_app(), ["docs", "show", "handbook/guide.docx"]).output

    security = connect(load_settings())
    try:
        reasons = [r["reason"] for r in security.audit.query(limit=None) if r["method"] == "DOCS"]
    finally:
        security.close()
    assert any(r.startswith("documents sync: 3 added") for r in reasons)
    assert any(f"{leave['id']} (handbook) relabelled internal -> public" in r for r in reasons)
    assert any("removed, excluded from sync" in r for r in reasons)
    assert not any("vacation" in r or "acquisition" in r for r in reasons)


def test_paths_outside_the_roots_and_bad_levels_are_clear_errors(configured: Path, tmp_path: Path) -> None:
    run("sync", "--json", code=1)
    outside = CliRunner().invoke(build_app(), ["docs", "show", str(configured / ".." / "garrison.toml")])
    assert outside.exit_code == 1 and "inside no storage root" in outside.output
    bad = CliRunner().invoke(build_app(), ["docs", "label", "handbook/leave.md", "secret"])
    assert bad.exit_code == 1 and "label must be one of" in bad.output
    unknown = CliRunner().invoke(build_app(), ["docs", "search", "x", "--collections", "finance"])
    assert unknown.exit_code == 1 and "'finance' does not exist" in unknown.output
