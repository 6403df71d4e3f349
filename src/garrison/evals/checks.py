"""Verifiable checks on an answer (IFEval style); each verdict carries a reason naming the evidence."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from garrison.evals.sandbox import extract_code, run_python_check

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_JSON_FENCE = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a case: `type` and `value` plus the type-specific fields of the suite format."""

    type: str
    value: Any = None
    ignore_case: bool = False
    tolerance: float = 0.0
    pick: str = "last"
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    timeout: float = 5.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        """Build a check from its (already validated) suite mapping."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and v is not None}
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check on one answer: `type`, `passed` and a human-readable `reason`."""

    type: str
    passed: bool
    reason: str


Outcome = tuple[bool, str]


def _fold(text: str, check: Check) -> str:
    """Text as compared: case-folded when the check says `ignore_case`."""
    return text.casefold() if check.ignore_case else text


def _short(text: str, limit: int = 60) -> str:
    """A quoted excerpt for reasons."""
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _contains(check: Check, answer: str) -> Outcome:
    found = _fold(check.value, check) in _fold(answer, check)
    return found, f"{'contains' if found else 'does not contain'} {check.value!r}"


def _not_contains(check: Check, answer: str) -> Outcome:
    found, reason = _contains(check, answer)
    return not found, reason


def _exact(check: Check, answer: str) -> Outcome:
    ok = _fold(answer.strip(), check) == _fold(check.value.strip(), check)
    return (
        ok,
        f"answer is exactly {check.value!r}" if ok else f"expected {check.value!r}, got {_short(answer)}",
    )


def _flags(check: Check) -> int:
    return re.IGNORECASE if check.ignore_case else 0


def _regex(check: Check, answer: str) -> Outcome:
    match = re.search(check.value, answer, _flags(check))
    if match is None:
        return False, f"no match for /{check.value}/"
    return True, f"/{check.value}/ matched {_short(match.group(0))}"


def _one_of(check: Check, answer: str) -> Outcome:
    options = {_fold(v.strip(), check) for v in check.value}
    ok = _fold(answer.strip(), check) in options
    return ok, f"answer is {'' if ok else 'not '}one of {check.value!r}" + (
        "" if ok else f": {_short(answer)}"
    )


def numbers_in(text: str) -> list[float]:
    """Every number written in the text, thousands separators allowed ('1,234.5' is one number)."""
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text)]


def _number(check: Check, answer: str) -> Outcome:
    found = numbers_in(answer)
    expected = float(check.value)
    want = f"{expected:g}" + (f" ± {check.tolerance:g}" if check.tolerance else "")
    if not found:
        return False, f"expected {want}, found no number"
    candidates = {"first": found[:1], "last": found[-1:], "any": found}[check.pick]
    for number in candidates:
        if math.isclose(number, expected, rel_tol=0.0, abs_tol=check.tolerance + 1e-9):
            return True, f"found {number:g} ({check.pick} number), expected {want}"
    shown = ", ".join(f"{n:g}" for n in candidates[:5])
    return False, f"expected {want}, found {shown} ({check.pick} number)"


def parse_json_answer(answer: str) -> Any:
    """The JSON value of an answer that is JSON, bare or as one fenced code block; ValueError otherwise."""
    text = answer.strip()
    fence = _JSON_FENCE.match(text)
    if fence is not None:
        text = fence.group(1).strip()
    return json.loads(text)


def _json_valid(check: Check, answer: str) -> Outcome:
    try:
        value = parse_json_answer(answer)
    except ValueError as exc:
        return False, f"not valid JSON: {exc}"
    return True, f"valid JSON ({type(value).__name__})"


def _json_schema(check: Check, answer: str) -> Outcome:
    try:
        value = parse_json_answer(answer)
    except ValueError as exc:
        return False, f"not valid JSON: {exc}"
    validator_cls = jsonschema.validators.validator_for(check.value, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(validator_cls(check.value).iter_errors(value))
    if error is None:
        return True, "JSON matches the schema"
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return False, f"schema violation at {where}: {error.message}"


def _words(answer: str) -> int:
    """Whitespace-separated words, as IFEval-style length instructions count them."""
    return len(answer.split())


def _max_words(check: Check, answer: str) -> Outcome:
    n = _words(answer)
    return n <= check.value, f"{n} words (max {check.value})"


def _min_words(check: Check, answer: str) -> Outcome:
    n = _words(answer)
    return n >= check.value, f"{n} words (min {check.value})"


def _starts_with(check: Check, answer: str) -> Outcome:
    ok = _fold(answer.strip(), check).startswith(_fold(check.value, check))
    return ok, f"{'starts' if ok else 'does not start'} with {check.value!r}" + (
        "" if ok else f": {_short(answer, 30)}"
    )


def _ends_with(check: Check, answer: str) -> Outcome:
    ok = _fold(answer.strip(), check).endswith(_fold(check.value, check))
    tail = answer.strip()[-30:]
    return ok, f"{'ends' if ok else 'does not end'} with {check.value!r}" + ("" if ok else f": …{tail!r}")


def _lowercase(check: Check, answer: str) -> Outcome:
    if answer.islower():
        return True, "all letters are lowercase"
    uppers = sorted({c for c in answer if c.isupper()})
    if not uppers:
        return False, "the answer has no letters"
    return False, f"uppercase letters found: {''.join(uppers[:10])}"


def _no_commas(check: Check, answer: str) -> Outcome:
    n = answer.count(",")
    return n == 0, "no commas" if n == 0 else f"{n} comma{'s' if n > 1 else ''} found"


def _count_regex(check: Check) -> str:
    """The regex counted: the `pattern`, or the word `value` as a whole word."""
    if check.pattern is not None:
        return check.pattern
    return rf"(?<!\w){re.escape(check.value)}(?!\w)"


def _count(check: Check, answer: str) -> Outcome:
    n = sum(1 for _ in re.finditer(_count_regex(check), answer, _flags(check)))
    what = f"/{check.pattern}/" if check.pattern is not None else repr(check.value)
    low = check.min if check.min is not None else 0
    high = check.max if check.max is not None else math.inf
    bounds = f"{low}..{'' if high == math.inf else high}"
    return low <= n <= high, f"{what} occurs {n} time{'s' if n != 1 else ''} (allowed {bounds})"


def _python(check: Check, answer: str) -> Outcome:
    result = run_python_check(extract_code(answer), check.value, timeout=check.timeout)
    return result.passed, result.reason


def _valid_regex(pattern: str, flags: int = 0) -> str | None:
    try:
        re.compile(pattern, flags)
    except re.error as exc:
        return f"invalid regex {pattern!r}: {exc}"
    return None


def _validate_regex(check: Mapping[str, Any]) -> list[tuple[str, str]]:
    problem = _valid_regex(check["value"])
    return [("value", problem)] if problem else []


def _validate_count(check: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if ("value" in check) == ("pattern" in check):
        problems.append(("value", "give exactly one of 'value' (a word) or 'pattern' (a regex)"))
    if "pattern" in check and (problem := _valid_regex(check["pattern"])):
        problems.append(("pattern", problem))
    if "min" not in check and "max" not in check:
        problems.append(("min", "give 'min', 'max' or both"))
    if "min" in check and "max" in check and check["min"] > check["max"]:
        problems.append(("max", f"max ({check['max']}) is below min ({check['min']})"))
    return problems


def _validate_schema(check: Mapping[str, Any]) -> list[tuple[str, str]]:
    schema = check["value"]
    try:
        validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validator_cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        return [("value", f"invalid JSON Schema: {exc.message}")]
    return []


def _validate_python(check: Mapping[str, Any]) -> list[tuple[str, str]]:
    try:
        compile(check["value"], "check.py", "exec")
    except SyntaxError as exc:
        return [("value", f"test code does not compile: {exc.msg} (line {exc.lineno})")]
    return []


@dataclass(frozen=True, slots=True)
class CheckType:
    """A check type: how to run it, which extra fields it accepts, and how to validate its fields."""

    run: Callable[[Check, str], Outcome]
    fields: frozenset[str]
    validate: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None


_TEXT = frozenset({"value", "ignore_case"})

CHECK_TYPES: dict[str, CheckType] = {
    "contains": CheckType(_contains, _TEXT),
    "not_contains": CheckType(_not_contains, _TEXT),
    "exact": CheckType(_exact, _TEXT),
    "regex": CheckType(_regex, _TEXT, _validate_regex),
    "one_of": CheckType(_one_of, _TEXT),
    "number": CheckType(_number, frozenset({"value", "tolerance", "pick"})),
    "json_valid": CheckType(_json_valid, frozenset({"value"})),
    "json_schema": CheckType(_json_schema, frozenset({"value"}), _validate_schema),
    "max_words": CheckType(_max_words, frozenset({"value"})),
    "min_words": CheckType(_min_words, frozenset({"value"})),
    "starts_with": CheckType(_starts_with, _TEXT),
    "ends_with": CheckType(_ends_with, _TEXT),
    "lowercase": CheckType(_lowercase, frozenset({"value"})),
    "no_commas": CheckType(_no_commas, frozenset({"value"})),
    "count": CheckType(_count, frozenset({"value", "pattern", "min", "max", "ignore_case"}), _validate_count),
    "python": CheckType(_python, frozenset({"value", "timeout"}), _validate_python),
}


def check_problems(check: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Semantic problems of a schema-valid check mapping, as (field, message) pairs."""
    kind = CHECK_TYPES.get(check.get("type", ""))
    if kind is None:
        return [("type", f"unknown check type {check.get('type')!r}")]
    problems = [
        (name, f"field '{name}' does not apply to check type '{check['type']}'")
        for name in check
        if name != "type" and name not in kind.fields
    ]
    if kind.validate is not None:
        problems.extend(kind.validate(check))
    return problems


def run_check(check: Check, answer: str) -> Verdict:
    """Apply one check to an answer; a check that itself errors counts as failed, with the reason."""
    try:
        passed, reason = CHECK_TYPES[check.type].run(check, answer)
    except Exception as exc:  # a verdict must always be produced, even by a faulty check
        return Verdict(check.type, False, f"check error: {type(exc).__name__}: {exc}")
    return Verdict(check.type, bool(passed), reason)


def run_checks(checks: tuple[Check, ...] | list[Check], answer: str) -> list[Verdict]:
    """Every check's verdict on one answer, in the suite's order."""
    return [run_check(check, answer) for check in checks]
