"""PII and secret detectors: valid values are found with their exact spans; look-alikes are not."""

from __future__ import annotations

import pytest

from garrison.guard import pii, secrets
from garrison.guard.spans import scan

DETECTORS = pii.detectors() + secrets.detectors()


def found(text: str) -> list[tuple[str, str]]:
    return [(s.type, s.value) for s in scan(text, DETECTORS)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to jane.doe+hr@mail.example.org today", "EMAIL", "jane.doe+hr@mail.example.org"),
        ("call (415) 555-2671 after 5", "PHONE", "(415) 555-2671"),
        ("or +44 20 7946 0958 in London", "PHONE", "+44 20 7946 0958"),
        ("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX", "IBAN", "DE89 3704 0044 0532 0130 00"),
        ("compact GB82WEST12345698765432.", "IBAN", "GB82WEST12345698765432"),
        ("SSN 536-22-1234 on file", "NATIONAL_ID", "536-22-1234"),
        ("DNI 12345678Z", "NATIONAL_ID", "12345678Z"),
        ("NINO AB 12 34 56 C", "NATIONAL_ID", "AB 12 34 56 C"),
        ("card 4111 1111 1111 1111 exp 04/27", "CARD", "4111 1111 1111 1111"),
        ("amex 3782-822463-10005", "CARD", "3782-822463-10005"),
        ("from 203.0.113.7 yesterday", "IP_ADDRESS", "203.0.113.7"),
        ("v6 2001:db8::8a2e:370:7334 too", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ("key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "CLOUD_KEY", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
        ("token ghp_" + "a1B2" * 9, "API_KEY", "ghp_" + "a1B2" * 9),
        ("gsk_prod_0123456789ab_" + "Ab3" * 13 + "x", "API_KEY", "gsk_prod_0123456789ab_" + "Ab3" * 13 + "x"),
        ("Authorization: Bearer Zx81kQ0pLm2nB7vC4xR9tY6u", "BEARER_TOKEN", "Zx81kQ0pLm2nB7vC4xR9tY6u"),
        ("db_password: Tr0ub4dor&3x", "PASSWORD", "Tr0ub4dor&3x"),
        ("postgres://app:s3cr3tPass@db:5432/app", "PASSWORD", "s3cr3tPass"),
        ("SECRET_KEY = 'q8Vn2LkR7xWm4TzP9sYb3HcJ'", "SECRET", "q8Vn2LkR7xWm4TzP9sYb3HcJ"),
    ],
)
def test_finds_value_with_its_exact_span(text: str, kind: str, value: str) -> None:
    assert (kind, value) in found(text)


def test_jwt_and_private_key_are_one_span_each() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    key = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n"
        "-----END PRIVATE KEY-----"
    )
    assert found(f"jwt {jwt} and\n{key}\nok") == [("JWT", jwt), ("PRIVATE_KEY", key)]


@pytest.mark.parametrize(
    "text",
    [
        "Order #48293017 shipped on 2025-03-14 10:22:31",
        "upgrade from version 1.2.3.4 to v2.14.3",
        "request id 550e8400-e29b-41d4-a716-446655440000",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "card number 4111 1111 1111 1112 fails Luhn",
        "ISBN 978-3-16-148410-0, invoice INV-2024-00123, SKU-88213-B",
        "AbstractSingletonProxyFactoryBean and /usr/local/lib/python3.11/site-packages",
        "api_key = os.environ['API_KEY']",
        "password: ${DB_PASSWORD}",
        "git@github.com:acme/repo.git",
        "npm install left-pad@1.3.0",
    ],
)
def test_hard_negatives_are_not_reported(text: str) -> None:
    assert found(text) == []


def test_overlapping_matches_keep_the_longest() -> None:
    # a Bearer value that is also a JWT is reported once
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    spans = scan(f"Authorization: Bearer {jwt}", DETECTORS)
    assert len(spans) == 1 and spans[0].value == jwt


def test_phone_region_setting_reads_national_numbers() -> None:
    uk = pii.detectors(phone_region="GB")
    assert [s.type for s in scan("ring 020 7946 0958", uk)] == ["PHONE"]
    assert scan("ring 020 7946 0958", pii.detectors(phone_region="US")) == []
