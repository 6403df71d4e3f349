"""The engine's pure helpers: prefix matching, JSON grammars, seeds (no model needed)."""

from __future__ import annotations

import pytest

from garrison.domain import ResponseFormat
from garrison.engines.kvcache import common_prefix
from garrison.engines.sampling import json_grammar, sampling_seed
from garrison.errors import InvalidRequest


@pytest.mark.parametrize(
    ("a", "b", "limit", "expected"),
    [
        ([], [1, 2], 5, 0),
        ([1, 2, 3], [1, 2, 3], 10, 3),
        ([1, 2, 3], [1, 2, 3], 2, 2),
        ([1, 2, 3, 4], [1, 2, 9, 4], 10, 2),
        ([7, 2, 3], [1, 2, 3], 10, 0),
        (list(range(1000)), [*range(517), -1, *range(518, 1000)], 2000, 517),
        (list(range(1000)), list(range(600)), 2000, 600),
    ],
)
def test_common_prefix(a: list[int], b: list[int], limit: int, expected: int) -> None:
    assert common_prefix(a, b, limit) == expected


def test_json_grammar_is_none_for_text_and_gbnf_for_json() -> None:
    assert json_grammar(None) is None
    assert json_grammar(ResponseFormat(type="text")) is None
    assert "root ::=" in (json_grammar(ResponseFormat(type="json_object")) or "")
    grammar = json_grammar(ResponseFormat(type="json_schema", schema={
        "type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}))
    assert grammar is not None and "age" in grammar


def test_json_grammar_rejects_a_schema_it_cannot_convert() -> None:
    with pytest.raises(InvalidRequest) as caught:
        json_grammar(ResponseFormat(type="json_schema", schema={"$ref": "#/definitions/missing"}))
    assert caught.value.param == "response_format"


def test_sampling_seed_is_stable_and_below_llamas_random_marker() -> None:
    assert sampling_seed(42) == 42
    assert sampling_seed(0xFFFFFFFF) != 0xFFFFFFFF
    assert 0 <= sampling_seed(-5) < 0xFFFFFFFF
    assert 0 <= sampling_seed(None) < 2**31
