"""Audit exports: JSON Lines or CSV, every stored field including the chain hashes (verifiable offline)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

from garrison.audit.chain import CHAINED_FIELDS, OPTIONAL_FIELDS

EXPORT_FIELDS: tuple[str, ...] = (*CHAINED_FIELDS, *OPTIONAL_FIELDS, "hash", "mac")
FORMATS = ("jsonl", "csv")


def export(records: Iterable[dict[str, Any]], out: TextIO, fmt: str = "jsonl") -> int:
    """Write records to `out` in `fmt`; returns how many were written."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}")
    count = 0
    if fmt == "jsonl":
        for record in records:
            out.write(json.dumps({f: record.get(f) for f in EXPORT_FIELDS}, ensure_ascii=False) + "\n")
            count += 1
        return count
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record)
        count += 1
    return count
