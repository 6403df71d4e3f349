"""Path safety: symlinks and `..` resolved, anything outside a root refused, from every entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from doc_files import write_text

from garrison.documents.roots import Root, Roots
from garrison.errors import ConfigError, NotFound, PathOutsideRoot
from garrison.settings import DocumentRoot


@pytest.fixture
def root(tmp_path: Path) -> Root:
    base = tmp_path / "root"
    write_text(base / "a.txt", "inside")
    write_text(base / "sub" / "b.md", "# inside too")
    write_text(tmp_path / "secret.txt", "outside the root")
    return Roots.from_settings([DocumentRoot(path=base, collection="hr")]).get("hr")


@pytest.mark.parametrize("name", ["../secret.txt", "sub/../../secret.txt", "/etc/passwd", "", "a\x00b"])
def test_names_that_leave_the_root_are_refused(root: Root, name: str) -> None:
    with pytest.raises(PathOutsideRoot) as caught:
        root.locate(name)
    assert caught.value.status == 403
    assert str(root.path) not in caught.value.message  # a client never learns the server's paths


def test_symlinks_escaping_the_root_are_refused_and_inner_ones_resolve(root: Root, tmp_path: Path) -> None:
    (root.path / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root.path / "alias.txt").symlink_to(root.path / "a.txt")
    (root.path / "outdir").symlink_to(tmp_path)
    with pytest.raises(PathOutsideRoot):
        root.locate("escape.txt")
    with pytest.raises(PathOutsideRoot):
        root.locate("outdir/secret.txt")
    assert root.locate("alias.txt") == "a.txt"
    assert root.locate("sub/./b.md") == "sub/b.md"


def test_walk_reports_escapes_and_indexes_aliases_under_their_target(root: Root, tmp_path: Path) -> None:
    (root.path / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root.path / "alias.txt").symlink_to(root.path / "a.txt")
    (root.path / "outdir").symlink_to(tmp_path)
    (root.path / ".hidden.txt").write_text("skipped")
    entries = {e.shown: e for e in root.walk()}
    assert entries["escape.txt"].relative is None and entries["escape.txt"].refused
    assert entries["outdir"].relative is None and entries["outdir"].refused
    assert entries["alias.txt"].relative == "a.txt"
    assert ".hidden.txt" not in entries
    assert not any(e.relative and "secret" in e.relative for e in entries.values())


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(root: Root, tmp_path: Path) -> None:
    relative = root.locate("sub/b.md")  # checked while sub/ is a real directory
    (root.path / "sub" / "b.md").unlink()
    (root.path / "sub").rmdir()
    outside = tmp_path / "elsewhere"
    write_text(outside / "b.md", "attacker content")
    (root.path / "sub").symlink_to(outside)
    with pytest.raises(PathOutsideRoot, match="symlink"):
        root.read(relative, 1000)


def test_a_file_swapped_for_a_symlink_is_not_followed(root: Root, tmp_path: Path) -> None:
    relative = root.locate("a.txt")
    os.unlink(root.path / "a.txt")
    (root.path / "a.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PathOutsideRoot):
        root.read(relative, 1000)


def test_writes_stay_inside_and_never_overwrite(root: Root) -> None:
    root.write_new("new/c.txt", b"fresh")
    assert (root.path / "new" / "c.txt").read_bytes() == b"fresh"
    with pytest.raises(Exception, match="already exists"):
        root.write_new("new/c.txt", b"again")
    assert not any(p.name.startswith(".garrison-upload") for p in root.path.rglob("*"))


def test_roots_check_collections_overlap_and_ownership(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(ConfigError, match="overlap"):
        Roots.from_settings([DocumentRoot(path=tmp_path / "a", collection="x"),
                             DocumentRoot(path=tmp_path / "a" / "b", collection="y")])
    roots = Roots.from_settings([DocumentRoot(path=tmp_path / "a", collection="x")])
    with pytest.raises(NotFound, match="'nope' does not exist"):
        roots.get("nope")
    assert roots.owning(tmp_path / "a" / "b" / ".." / "f.txt") == (roots.get("x"), "f.txt")
    with pytest.raises(PathOutsideRoot):
        roots.owning(tmp_path / "a" / ".." / "f.txt")
