"""Personal data found offline: emails, phone numbers, IBANs, national ids, payment cards and IP addresses.

Every detector is a regular expression for candidates followed by a validator that knows the format's
rules (phonenumbers' metadata, python-stdnum's check digits, Luhn plus issuer prefixes, the ipaddress
module), so order numbers, version strings and random digit runs are not reported.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from functools import partial

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn
from stdnum.es import dni as _es_dni
from stdnum.es import nie as _es_nie
from stdnum.fr import nir as _fr_nir
from stdnum.it import codicefiscale as _it_cf
from stdnum.us import ssn as _us_ssn

from garrison.guard.spans import Detector, Span

PII_TYPES: tuple[str, ...] = ("EMAIL", "PHONE", "IBAN", "NATIONAL_ID", "CARD", "IP_ADDRESS")

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])"
)


_SSH_REMOTE = re.compile(r":[\w.~-]+/")


def find_emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        if _SSH_REMOTE.match(text, m.end()):
            continue  # an ssh remote (git@host:org/repo), not a mailbox
        if m.start() > 0 and text[m.start() - 1] == "@":
            continue
        yield Span(m.start(), m.end(), "EMAIL", m.group())


_DIGITS7 = re.compile(r"\d(?:\D{0,3}\d){6}")
_VERSIONISH = re.compile(r"(?:\bv|version|release|build|rev)\s*$", re.IGNORECASE)


def find_phones(text: str, region: str = "US") -> Iterator[Span]:
    """Numbers phonenumbers considers valid for their country (+CC, or `region` when none is written)."""
    if not _DIGITS7.search(text):
        return
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        start, end = match.start, match.end
        before = text[max(0, start - 12): start]
        if _VERSIONISH.search(before) or (start > 0 and text[start - 1] in "#/=:-_") or (
            end < len(text) and (text[end].isalnum() or text[end] in "-_/")
        ):
            continue
        raw = match.raw_string
        if "." in raw and raw.count(".") >= 2 and not raw.startswith("+"):
            continue  # dotted runs are dates, versions or IPs far more often than phones
        yield Span(start, end, "PHONE", text[start:end])


_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")


def find_ibans(text: str) -> Iterator[Span]:
    for m in _IBAN.finditer(text):
        value = m.group()
        while len(value.replace(" ", "")) >= 15:  # a trailing word may have been swallowed: shorten by groups
            if _iban.is_valid(value):
                yield Span(m.start(), m.start() + len(value), "IBAN", value)
                break
            cut = value.rfind(" ")
            if cut < 0:
                break
            value = value[:cut]


_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_NINO = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_DNI = re.compile(r"\b(?:\d{8}-?[A-Z]|[XYZ]-?\d{7}-?[A-Z])\b")
_CODICE_FISCALE = re.compile(r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b")
_NIR = re.compile(
    r"(?<!\d)(?<!\d )[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2A|2B) ?\d{3} ?\d{3} ?\d{2}(?!\d)"
)


def find_national_ids(text: str) -> Iterator[Span]:
    """US SSNs, UK National Insurance numbers, Spanish DNI/NIE, Italian codici fiscali, French NIRs."""
    checks = (
        (_SSN, _us_ssn.is_valid),
        (_NINO, lambda v: True),
        (_DNI, lambda v: _es_dni.is_valid(v) or _es_nie.is_valid(v)),
        (_CODICE_FISCALE, _it_cf.is_valid),
        (_NIR, _fr_nir.is_valid),
    )
    for pattern, valid in checks:
        for m in pattern.finditer(text):
            if valid(m.group()):
                yield Span(m.start(), m.end(), "NATIONAL_ID", m.group())


_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_ISSUERS = re.compile(r"^(?:4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3(?:0[0-5]|[68])|6(?:011|5|4[4-9]|22)|35)")


def find_cards(text: str) -> Iterator[Span]:
    """Payment card numbers: 13-19 digits, a known issuer prefix, a valid Luhn check digit."""
    for m in _CARD.finditer(text):
        raw = m.group()
        separators = {c for c in raw if not c.isdigit()}
        if len(separators) > 1:
            continue
        digits = raw.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and _ISSUERS.match(digits) and luhn.is_valid(digits):
            yield Span(m.start(), m.end(), "CARD", raw)


_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:/\d{1,2})?"
    r"(?![\w]|\.\d)"
)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)(?![\w:])")


def find_ips(text: str) -> Iterator[Span]:
    """IPv4 (not after 'version', 'v', 'release') and IPv6 addresses the ipaddress module accepts."""
    if "." in text:
        for m in _IPV4.finditer(text):
            if _VERSIONISH.search(text[max(0, m.start() - 12): m.start()]):
                continue
            yield Span(m.start(), m.end(), "IP_ADDRESS", m.group())
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            try:
                ipaddress.IPv6Address(m.group())
            except ValueError:
                continue
            yield Span(m.start(), m.end(), "IP_ADDRESS", m.group())


def detectors(phone_region: str = "US") -> list[Detector]:
    """The PII detectors, each with how far a streamed match of it can reach back."""
    return [
        Detector("pii", ("EMAIL",), find_emails, 254, re.compile(r"[\w%+@-][\w.%+@-]*\Z")),
        Detector(
            "pii", ("PHONE",), partial(find_phones, region=phone_region), 24, re.compile(r"[\d+(][\d+()\s./-]*\Z")
        ),
        Detector("pii", ("IBAN",), find_ibans, 42, re.compile(r"[A-Z][A-Z0-9 ]*\Z")),
        Detector("pii", ("NATIONAL_ID",), find_national_ids, 21, re.compile(r"[A-Z0-9][A-Z0-9 -]*\Z")),
        Detector("pii", ("CARD",), find_cards, 23, re.compile(r"\d[\d -]*\Z")),
        Detector("pii", ("IP_ADDRESS",), find_ips, 45, re.compile(r"[0-9A-Fa-f:][0-9A-Fa-f.:/]*\Z")),
    ]
