"""Credentials found offline: cloud and SaaS keys, private keys, JWTs, bearer tokens, garrison keys and
high-entropy strings.

Own patterns (modelled on the formats the vendors document) rather than detect-secrets' plugins: those
scan source lines and report a line and the secret, not character offsets in prose, their entropy plugins
only look inside quoted strings, and each call walks every plugin through its file machinery.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from garrison.guard.spans import Detector, Span

SECRET_TYPES: tuple[str, ...] = (
    "PRIVATE_KEY", "AWS_ACCESS_KEY", "CLOUD_KEY", "API_KEY", "JWT", "BEARER_TOKEN", "PASSWORD", "SECRET",
)

_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]{16,8000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
    r"(?: BLOCK)?-----"
)
# (type, pattern): a whole match is the secret unless the pattern has a group named v.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS_ACCESS_KEY", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b")),
    ("CLOUD_KEY", re.compile(
        r"(?i:aws_secret_access_key|aws_secret)\W{1,4}(?P<v>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
    )),
    ("CLOUD_KEY", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![\w-])")),
    ("CLOUD_KEY", re.compile(r"AccountKey=(?P<v>[A-Za-z0-9+/]{86}==)")),
    ("CLOUD_KEY", re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}")),
    ("API_KEY", re.compile(r"\bgsk_[A-Za-z0-9_]{20,}\b")),
    ("API_KEY", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")),
    ("API_KEY", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("API_KEY", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("API_KEY", re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b")),
    ("API_KEY", re.compile(r"\bsk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_-]{20,}")),
    ("API_KEY", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("API_KEY", re.compile(r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")),
    ("API_KEY", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("BEARER_TOKEN", re.compile(r"(?i:\bbearer)\s+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)")),
    ("PASSWORD", re.compile(
        r"(?i:(?<![A-Za-z])(?:password|passwd|passphrase|pwd)(?![A-Za-z]))[\"']?\s*(?:[:=]|\bis\b)\s*[\"']?(?P<v>[^\s\"',;<>]{6,128})"
    )),
    ("PASSWORD", re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,64}:(?P<v>[^\s:/@]{3,128})@")),
    ("SECRET", re.compile(
        r"(?i:\b(?:secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|client[_-]?secret|private[_-]?token"
        r"|secret[_-]?key|signing[_-]?key)\b)[\"']?\s*[:=]\s*[\"']?(?P<v>[A-Za-z0-9_/+=.~-]{12,256})"
    )),
)
_PLACEHOLDER_VALUE = re.compile(r"^(?:\$|\{|<|\[|%|os\.|env\.|process\.|x{4,}|\*{3,}|\.{3}|changeme|example)", re.I)
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{24,512}={0,2}(?![A-Za-z0-9+/_=-])")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s own character distribution."""
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(token: str) -> bool:
    """A token with the mix and spread of characters that generated credentials have and words lack."""
    if _HEX.match(token) or _UUID.match(token):
        return False  # digests, git SHAs and UUIDs are identifiers, not credentials
    core = token.rstrip("=")
    classes = sum((any(c.islower() for c in core), any(c.isupper() for c in core), any(c.isdigit() for c in core)))
    if classes < 3:
        return False
    if "/" in core and core.count("/") > len(core) // 12:
        return False  # a path
    digits = sum(c.isdigit() for c in core)
    if digits < 2 or len(re.findall(r"[a-z]{2,}[A-Z]|[A-Z][a-z]{3,}", core)) * 6 > len(core):
        return False  # camelCase identifiers and words with a number
    return shannon_entropy(core) >= (4.0 if len(core) < 40 else 4.3)


def find_secrets(text: str) -> Iterator[Span]:
    """Every credential-shaped span; keyword-anchored patterns report the value, not the keyword."""
    yield from find_private_keys(text)
    yield from find_tokens(text)


def find_private_keys(text: str) -> Iterator[Span]:
    """PEM private key blocks, BEGIN to END."""
    if "PRIVATE KEY-----" in text:
        for m in _PRIVATE_KEY.finditer(text):
            yield Span(m.start(), m.end(), "PRIVATE_KEY", m.group())


def find_tokens(text: str) -> Iterator[Span]:
    """Keys, tokens and passwords: one unbroken string each."""
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            start, end = m.span("v") if "v" in pattern.groupindex else m.span()
            value = text[start:end]
            if kind in ("PASSWORD", "SECRET") and _PLACEHOLDER_VALUE.match(value):
                continue
            yield Span(start, end, kind, value)
    for m in _TOKEN.finditer(text):
        if _looks_random(m.group()):
            yield Span(m.start(), m.end(), "SECRET", m.group())


_KEY_TAIL = re.compile(  # an open BEGIN block (until its END marker is complete), or a marker being written
    r"(?:-----BEGIN (?:(?!-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)[\s\S])*"
    r"|-{1,5}(?:B(?:E(?:G(?:I(?:N)?)?)?)?)?)\Z"
)


def detectors() -> list[Detector]:
    """The secret detectors; a private key may span 8 KiB, every other credential is one unbroken token."""
    return [
        Detector("secrets", ("PRIVATE_KEY",), find_private_keys, 8192, _KEY_TAIL),
        Detector(
            "secrets", tuple(t for t in SECRET_TYPES if t != "PRIVATE_KEY"), find_tokens, 600,
            re.compile(r"(?:(?i:bearer|password|passwd|secret|token|key|pwd)[\"':= ]{0,4})?[^\s\"',;<>]*\Z"),
        ),
    ]

