"""Load an eval suite from YAML and reject a bad one (naming file, case and field) before anything runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from garrison.domain import ChatMessage
from garrison.errors import ConfigError
from garrison.evals.checks import CHECK_TYPES, Check, check_problems

DEFAULT_TEMPERATURE = 0.0
DEFAULT_SEED = 0
DEFAULT_MAX_TOKENS = 128


class SuiteError(ConfigError):
    """A suite file is unreadable or invalid; `problems` lists each one as 'file: case: field: message'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid eval suite:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Case:
    """One prompt (as chat messages) with its tags and the checks its answer must pass."""

    id: str
    messages: tuple[ChatMessage, ...]
    tags: tuple[str, ...]
    checks: tuple[Check, ...]
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Suite:
    """A validated suite: request settings shared by every case, and the cases in file order."""

    name: str
    description: str
    cases: tuple[Case, ...]
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = DEFAULT_SEED
    max_tokens: int = DEFAULT_MAX_TOKENS
    system: str | None = None
    source: str = "<suite>"

    @property
    def tags(self) -> list[str]:
        """Every tag used by a case, sorted."""
        return sorted({tag for case in self.cases for tag in case.tags})


@cache
def suite_schema() -> dict[str, Any]:
    """The JSON Schema of the suite format, shipped in the package."""
    text = resources.files("garrison.evals").joinpath("data/suite.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def starter_suite_path() -> Path:
    """Path of the starter suite shipped with the package."""
    return Path(str(resources.files("garrison.evals").joinpath("data/starter.yaml")))


def load_suite(path: str | Path) -> Suite:
    """Read, validate and build the suite at `path`; raise SuiteError listing every problem found."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError([f"{source}: invalid YAML{where}: {problem}"]) from exc
    return parse_suite(data, source=source)


def parse_suite(data: Any, *, source: str = "<suite>") -> Suite:
    """Validate a parsed suite document against the schema and the semantic rules, then build it."""
    problems = validate_suite(data, source=source)
    if problems:
        raise SuiteError(problems)
    return _build(data, source)


def validate_suite(data: Any, *, source: str = "<suite>") -> list[str]:
    """Every problem in a parsed suite document, each naming the file, the case id and the field."""
    if not isinstance(data, dict):
        return [f"{source}: the suite must be a mapping with 'name' and 'cases'"]
    validator = jsonschema.Draft202012Validator(suite_schema())
    found = [_explain(error) for error in validator.iter_errors(data)]
    cases = data.get("cases")
    if isinstance(cases, list):
        broken = [tuple(path) for path, _ in found]
        found.extend(_semantic_problems(cases, broken))
    found.sort(key=lambda item: [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in item[0]])
    return [_locate(source, data, path, message) for path, message in found]


def _explain(error: jsonschema.ValidationError) -> tuple[list[str | int], str]:
    """The field path and a plain message for one schema error."""
    path: list[str | int] = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        required = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [p for p in required if p not in error.instance]
        return path + missing[:1], "missing required field"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        extra = sorted(k for k in error.instance if k not in allowed)
        return path + extra[:1], "unknown field"
    if path and path[-1] == "type" and "checks" in path and error.validator == "enum":
        known = ", ".join(sorted(CHECK_TYPES))
        return path, f"unknown check type {error.instance!r} (known: {known})"
    return path, error.message


def _case_label(data: dict[str, Any], index: int) -> str:
    """How problems name a case: by its id, or by position when it has no usable id."""
    cases = data.get("cases")
    case = cases[index] if isinstance(cases, list) and index < len(cases) else None
    if isinstance(case, dict) and isinstance(case.get("id"), str) and case["id"]:
        return f"case {case['id']!r}"
    return f"case #{index + 1}"


def _field(path: list[str | int]) -> str:
    """A field path as `checks[0].type`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _locate(source: str, data: dict[str, Any], path: list[str | int], message: str) -> str:
    """One problem line: 'file: case 'id': field: message' (case and field where they apply)."""
    parts = [source]
    if len(path) >= 2 and path[0] == "cases" and isinstance(path[1], int):
        parts.append(_case_label(data, path[1]))
        path = path[2:]
    if path:
        parts.append(_field(path))
    return ": ".join([*parts, message])


Problem = tuple[list[str | int], str]


def _semantic_problems(cases: list[Any], broken: list[tuple[str | int, ...]]) -> list[Problem]:
    """Rules a JSON Schema cannot say well: unique ids, prompt xor messages, compilable regexes and code."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}

    def has_error(*prefix: str | int) -> bool:
        return any(path[: len(prefix)] == prefix for path in broken)

    for index, case in enumerate(cases):
        if not isinstance(case, dict):
            continue
        where: list[str | int] = ["cases", index]
        case_errors = [p for p in broken if p[:2] == ("cases", index) and p[2:3] != ("checks",)]
        if not case_errors:
            first = seen.setdefault(case["id"], index)
            if first != index:
                problems.append(([*where, "id"], f"duplicate case id (first used by case #{first + 1})"))
            if ("prompt" in case) == ("messages" in case):
                problems.append(([*where, "prompt"], "give exactly one of 'prompt' or 'messages'"))
            elif "messages" in case and case["messages"][-1]["role"] != "user":
                last = len(case["messages"]) - 1
                problems.append(([*where, "messages", last, "role"], "the last message must be the user's"))
        checks = case.get("checks")
        for number, check in enumerate(checks if isinstance(checks, list) else []):
            if not isinstance(check, dict) or has_error("cases", index, "checks", number):
                continue
            for field, message in check_problems(check):
                problems.append(([*where, "checks", number, field], message))
    return problems


def _build(data: dict[str, Any], source: str) -> Suite:
    """Construct the Suite from a document that passed validation."""
    defaults = data.get("defaults", {})
    default_max = defaults.get("max_tokens", DEFAULT_MAX_TOKENS)
    cases = []
    for raw in data["cases"]:
        system = raw.get("system", defaults.get("system"))
        if "prompt" in raw:
            messages = [ChatMessage("user", raw["prompt"])]
        else:
            messages = [ChatMessage(m["role"], m["content"]) for m in raw["messages"]]
        if system and not any(m.role == "system" for m in messages):
            messages.insert(0, ChatMessage("system", system))
        cases.append(
            Case(
                id=raw["id"],
                messages=tuple(messages),
                tags=tuple(raw.get("tags", ())),
                checks=tuple(Check.from_dict(c) for c in raw["checks"]),
                max_tokens=raw.get("max_tokens", default_max),
            )
        )
    return Suite(
        name=data["name"],
        description=data.get("description", ""),
        cases=tuple(cases),
        temperature=float(defaults.get("temperature", DEFAULT_TEMPERATURE)),
        seed=int(defaults.get("seed", DEFAULT_SEED)),
        max_tokens=default_max,
        system=defaults.get("system"),
        source=source,
    )
