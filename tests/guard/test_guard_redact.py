"""Typed placeholders, rehydration, and streamed redaction that never releases part of a match."""

from __future__ import annotations

import random

import pytest

from garrison.guard import pii, secrets
from garrison.guard.redact import StreamRedactor, StreamRehydrator, Vault, redact
from garrison.guard.spans import scan

DETECTORS = pii.detectors() + secrets.detectors()
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7dP0q1Xq9\nZm3Rk8sLw2vQ==\n-----END RSA PRIVATE KEY-----"
TEXT = (
    "Reach jane@example.com or (415) 555-2671; pay to DE89 3704 0044 0532 0130 00 with card "
    "4111-1111-1111-1111. Use Bearer Zx81kQ0pLm2nB7vC4xR9tY6u from 203.0.113.7, again jane@example.com.\n"
    f"{KEY}\nThanks, AKIAIOSFODNN7EXAMPLE"
)


def whole(text: str) -> tuple[str, Vault]:
    vault = Vault()
    return redact(text, scan(text, DETECTORS), vault), vault


def test_same_value_same_placeholder_and_types_numbered_apart() -> None:
    out, vault = whole(TEXT)
    assert out.count("[EMAIL_1]") == 2 and "[EMAIL_2]" not in out
    for placeholder in ("[PHONE_1]", "[IBAN_1]", "[CARD_1]", "[BEARER_TOKEN_1]", "[IP_ADDRESS_1]",
                        "[PRIVATE_KEY_1]", "[AWS_ACCESS_KEY_1]"):
        assert placeholder in out
    assert "jane@" not in out and "4111" not in out and "MIIE" not in out
    assert vault.originals["[EMAIL_1]"] == "jane@example.com"


def test_rehydrate_restores_only_the_callers_placeholders() -> None:
    vault = Vault()
    text = "mail a@example.com and b@example.org"
    spans = scan(text, DETECTORS)
    mine = redact(text[:18], spans[:1], vault, rehydrate=True)
    theirs = redact(text, spans[1:], vault, rehydrate=False)
    assert mine == "mail [EMAIL_1]" and theirs.endswith("[EMAIL_2]")
    assert vault.rehydrate("to [EMAIL_1], cc [EMAIL_2], [EMAIL_9]") == "to a@example.com, cc [EMAIL_2], [EMAIL_9]"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stream_in_any_pieces_equals_whole_text_redaction(seed: int) -> None:
    expected, _ = whole(TEXT)
    rng = random.Random(seed)
    vault = Vault()
    stream = StreamRedactor(DETECTORS, None, lambda s: vault.placeholder(s, rehydrate=False))
    out, emitted, pos = [], "", 0
    while pos < len(TEXT):
        step = rng.choice([1, 1, 2, 3, 7, 20])
        piece = stream.feed(TEXT[pos:pos + step])
        pos += step
        out.append(piece)
        emitted += piece
        for secret in ("4111-1111", "Zx81kQ0p", "MIIEowIB", "jane@exa", "AKIAIOSF"):
            assert secret not in emitted  # not even a prefix of a value ever leaves
    out.append(stream.flush())
    assert "".join(out) == expected


def test_stream_holds_back_only_the_open_tail() -> None:
    vault = Vault()
    stream = StreamRedactor(DETECTORS, None, lambda s: vault.placeholder(s, rehydrate=False))
    assert stream.feed("The weather is fine today. ") == "The weather is fine today. "
    assert stream.feed("Write to bob") == "Write to "  # 'bob' could become an email
    assert stream.feed("@example.com please") == "[EMAIL_1] "
    assert stream.flush() == "please"


def test_stream_rehydrator_handles_placeholders_split_across_deltas() -> None:
    vault = Vault()
    text = "hi a@example.com"
    redact(text, scan(text, DETECTORS), vault, rehydrate=True)
    rehydrator = StreamRehydrator(vault)
    pieces = [rehydrator.feed(p) for p in ("Sure, [EM", "AIL", "_1] is", " noted [not a placeholder")]
    pieces.append(rehydrator.flush())
    assert "".join(pieces) == "Sure, a@example.com is noted [not a placeholder"
    assert pieces[0] == "Sure, " and pieces[1] == ""
