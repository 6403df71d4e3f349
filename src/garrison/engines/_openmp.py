"""The OpenMP wait policy of llama.cpp's worker threads, as libgomp will read it when the library loads."""

from __future__ import annotations

import os


def wait_policy() -> str:
    """The policy in effect: the operator's OMP_WAIT_POLICY / GOMP_SPINCOUNT, else libgomp's spin-then-sleep."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"]
    if "GOMP_SPINCOUNT" in os.environ:
        return f"GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']}"
    return "default"
