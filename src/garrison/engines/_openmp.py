"""The OpenMP wait policy of llama.cpp's worker threads, set before its library loads (see the package doc)."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

DEFAULT_POLICY = "PASSIVE"


def apply_wait_policy() -> str:
    """Default OMP_WAIT_POLICY to PASSIVE unless the operator chose; returns the policy in effect."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return os.environ.get("OMP_WAIT_POLICY", f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    if "llama_cpp" in sys.modules:  # libgomp has read its environment already: too late for this process
        log.warning("llama_cpp was imported before garrison.engines: OpenMP threads keep their default "
                    "(spinning) wait policy; set OMP_WAIT_POLICY=PASSIVE in the environment")
        return "default"
    os.environ["OMP_WAIT_POLICY"] = DEFAULT_POLICY
    return DEFAULT_POLICY
