"""Settings precedence: flags > GARRISON_* env > garrison.toml > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.settings import load_settings


@pytest.fixture
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "garrison.toml"
    path.write_text('port = 9000\nhost = "127.0.0.2"\n[engine]\nthreads = 3\nmax_queue = 5\n')
    monkeypatch.setenv("GARRISON_CONFIG", str(path))
    for var in ("GARRISON_PORT", "GARRISON_HOST", "GARRISON_ENGINE__THREADS"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_defaults_without_any_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GARRISON_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("GARRISON_HOME", str(tmp_path / "home"))
    settings = load_settings()
    assert (settings.host, settings.port, settings.engine.context_length) == ("127.0.0.1", 8400, 4096)
    assert settings.home == (tmp_path / "home").resolve()
    assert settings.auth.enabled is True


def test_toml_over_defaults(toml: Path) -> None:
    settings = load_settings()
    assert (settings.port, settings.host, settings.engine.threads, settings.engine.max_queue) == (
        9000, "127.0.0.2", 3, 5)
    assert settings.config_file == toml.resolve()


def test_env_over_toml(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_PORT", "9100")
    monkeypatch.setenv("GARRISON_ENGINE__THREADS", "4")
    settings = load_settings()
    assert (settings.port, settings.engine.threads, settings.engine.max_queue) == (9100, 4, 5)


def test_flags_over_env_keep_other_nested_values(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_PORT", "9100")
    settings = load_settings(port=9200, engine={"threads": 1})
    assert (settings.port, settings.engine.threads, settings.engine.max_queue) == (9200, 1, 5)


def test_unknown_keys_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "garrison.toml"
    path.write_text("prot = 1\n")
    monkeypatch.setenv("GARRISON_CONFIG", str(path))
    with pytest.raises(ValueError, match="prot"):
        load_settings()
