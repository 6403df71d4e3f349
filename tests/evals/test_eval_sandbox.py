"""The `python` check's sandbox: code extraction, verdicts, and the limits that guard against accidents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from garrison.evals.sandbox import extract_code, run_python_check


def test_extract_code_prefers_the_first_python_block() -> None:
    answer = "Here:\n```text\nnot code\n```\n```python\ndef f():\n    return 1\n```\nand ```py\nx = 2\n```"
    assert extract_code(answer) == "def f():\n    return 1"


def test_extract_code_takes_an_unclosed_block_and_raw_text() -> None:
    assert extract_code("```\ndef f(): pass") == "def f(): pass"
    assert extract_code("  def f(): pass\n") == "def f(): pass"


def test_passing_code_passes() -> None:
    result = run_python_check("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n")
    assert result.passed, result.reason


def test_failing_assertion_names_the_line() -> None:
    result = run_python_check("def add(a, b):\n    return a - b\n", "assert add(1, 1) == 2, 'sum'\n")
    assert not result.passed
    assert result.reason == "test failed: AssertionError: sum at `assert add(1, 1) == 2, 'sum'`"


def test_broken_answer_code_is_reported_as_the_answers_fault() -> None:
    result = run_python_check("def add(a, b) return a\n", "assert add(1, 1) == 2\n")
    assert not result.passed
    assert result.reason.startswith("the answer's code raised SyntaxError")


def test_timeout_kills_an_endless_loop() -> None:
    result = run_python_check("while True:\n    pass\n", "pass\n", timeout=0.5)
    assert not result.passed
    assert result.reason == "timed out after 0.5s"


def test_memory_limit_stops_a_huge_allocation() -> None:
    result = run_python_check("blob = bytearray(4 * 1024 ** 3)\n", "pass\n", memory_mb=256)
    assert not result.passed
    assert "MemoryError" in result.reason


def test_exiting_early_does_not_pass() -> None:
    assert not run_python_check("import os\nos._exit(0)\n", "assert False\n").passed
    result = run_python_check("import sys\nsys.exit(0)\n", "pass\n")
    assert not result.passed
    assert "SystemExit" in result.reason


def test_environment_secrets_are_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARRISON_TEST_SECRET", "s3cret")
    result = run_python_check("import os\n", "assert 'GARRISON_TEST_SECRET' not in os.environ\n")
    assert result.passed, result.reason


def test_code_runs_in_a_throwaway_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_python_check(
        "open('left-behind.txt', 'w').write('x')\n", "import os\nassert os.path.exists('left-behind.txt')\n"
    )
    assert result.passed, result.reason
    assert not (tmp_path / "left-behind.txt").exists()
    assert os.listdir(tmp_path) == []


def test_input_reads_nothing() -> None:
    result = run_python_check("name = input()\n", "pass\n")
    assert not result.passed
    assert "EOFError" in result.reason
