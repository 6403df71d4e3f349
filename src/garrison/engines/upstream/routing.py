"""Choosing a replica: least outstanding requests (or round robin), passive ejection with a cooldown, retries.

A replica is routable when it is `healthy`, or `unknown` (never probed) for a model without a pinned revision.
Passive ejection: `eject_after` consecutive failures take it out for `eject_for` seconds; after the cooldown it
is tried again, and one more failure ejects it again. An active probe that passes readmits it at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from garrison.engines.upstream.errors import ReplicaFailure, no_replica
from garrison.errors import GarrisonError

ReplicaState = Literal["unknown", "healthy", "unhealthy", "ejected", "drifted"]


@dataclass(slots=True, eq=False)
class Replica:
    """One upstream base URL and what garrison has seen of it."""

    url: str
    state: ReplicaState = "unknown"
    outstanding: int = 0
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    reason: str | None = None  # why it is not healthy (last failure, probe error, drift)
    revision: str | None = None  # the model identity it last reported
    checked_at: float | None = None  # wall time of the last probe
    requests: int = 0
    failures: int = 0
    ejections: int = 0
    order: int = field(default=0)

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.url, "state": self.state, "outstanding": self.outstanding,
            "consecutive_failures": self.consecutive_failures, "requests": self.requests,
            "failures": self.failures, "ejections": self.ejections, "reason": self.reason,
            "revision": self.revision, "checked_at": self.checked_at,
        }
        if self.state == "ejected":
            out["ejected_for_s"] = round(max(0.0, self.ejected_until - now), 3)
        return out


class Router:
    """The replicas of one model and the policy that picks among them."""

    def __init__(
        self,
        urls: list[str],
        *,
        policy: Literal["least_outstanding", "round_robin"] = "least_outstanding",
        eject_after: int = 3,
        eject_for: float = 10.0,
        verified_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replicas = [Replica(url, order=i) for i, url in enumerate(urls)]
        self.policy = policy
        self.eject_after = eject_after
        self.eject_for = eject_for
        self.verified_only = verified_only  # a pinned revision: never route before a probe confirmed it
        self._clock = clock
        self._turn = itertools.count()

    def routable(self, replica: Replica) -> bool:
        if replica.state == "ejected" and self._clock() >= replica.ejected_until:
            replica.state = "unknown" if replica.revision is None and self.verified_only else "healthy"
            replica.consecutive_failures = self.eject_after - 1  # on probation: one more failure ejects it
            if self.verified_only and replica.revision is None:
                return False
        if replica.state == "healthy":
            return True
        return replica.state == "unknown" and not self.verified_only

    def pick(self, exclude: set[Replica] | None = None) -> Replica | None:
        """The replica for the next attempt, or None when no routable one is left."""
        candidates = [r for r in self.replicas if (not exclude or r not in exclude) and self.routable(r)]
        if not candidates:
            return None
        if self.policy == "round_robin":
            return candidates[next(self._turn) % len(candidates)]
        turn = next(self._turn)  # ties rotate, so equal replicas share the load
        n = len(self.replicas)
        return min(candidates, key=lambda r: (r.outstanding, (r.order - turn) % n))

    def succeeded(self, replica: Replica) -> None:
        replica.consecutive_failures = 0
        if replica.state in ("ejected", "unknown") and not (self.verified_only and replica.revision is None):
            replica.state = "healthy"
        replica.reason = None if replica.state == "healthy" else replica.reason

    def failed(self, replica: Replica, failure: ReplicaFailure) -> None:
        replica.failures += 1
        replica.consecutive_failures += 1
        replica.reason = failure.message
        if replica.consecutive_failures >= self.eject_after and replica.state != "drifted":
            replica.state = "ejected"
            replica.ejected_until = self._clock() + self.eject_for
            replica.ejections += 1

    def readmit(self, replica: Replica) -> None:
        """An active probe passed: route to it again at once."""
        replica.state = "healthy"
        replica.consecutive_failures = 0
        replica.reason = None

    def why_idle(self, exclude: set[Replica]) -> str | None:
        """Why the replicas not tried could not take the request."""
        parts = [f"{r.url} ({r.state}{': ' + r.reason if r.reason else ''})"
                 for r in self.replicas if r not in exclude and not self.routable(r)]
        return "; ".join(parts) or None

    def describe(self) -> list[dict[str, Any]]:
        now = self._clock()
        for replica in self.replicas:
            self.routable(replica)  # settle expired cooldowns so the state shown is current
        return [r.describe(now) for r in self.replicas]


class Attempts:
    """The replicas one request may try, each at most once: the first pick plus `retries` others."""

    def __init__(self, router: Router, model_id: str, retries: int) -> None:
        self.router = router
        self.model_id = model_id
        self.left = retries + 1
        self.tried: set[Replica] = set()
        self.failures: list[tuple[str, ReplicaFailure]] = []

    def next(self) -> Replica:
        """The next replica to try (its outstanding count raised); raises the final error when none is left."""
        replica = self.router.pick(self.tried) if self.left > 0 else None
        if replica is None:
            raise self.exhausted()
        self.left -= 1
        self.tried.add(replica)
        replica.outstanding += 1
        replica.requests += 1
        return replica

    def done(self, replica: Replica) -> None:
        replica.outstanding -= 1

    def failed(self, replica: Replica, failure: ReplicaFailure) -> bool:
        """Record a failure; True when the request may go on to another replica."""
        self.router.failed(replica, failure)
        self.failures.append((replica.url, failure))
        return failure.retryable

    def exhausted(self) -> GarrisonError:
        return no_replica(self.model_id, self.failures, self.router.why_idle(self.tried))
