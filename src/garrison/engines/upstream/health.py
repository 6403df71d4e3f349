"""Active health checks: probe every replica's model listing, readmit the ones that answer, pin their revision."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from garrison.engines.upstream.errors import ReplicaFailure, describe
from garrison.engines.upstream.integrity import Probe, drift
from garrison.engines.upstream.routing import Replica, Router
from garrison.errors import GarrisonError

log = logging.getLogger(__name__)

ProbeFn = Callable[[Replica], Awaitable[Probe]]


class HealthChecker:
    """Probes each replica every `interval` seconds (and once before the first request of a pinned model)."""

    def __init__(
        self,
        router: Router,
        probe: ProbeFn,
        *,
        model: str,
        pinned: str | None,
        require_listed: bool,
        interval: float,
        timeout: float,
    ) -> None:
        self.router = router
        self._probe = probe
        self.model = model
        self.pinned = pinned
        self.require_listed = require_listed  # Ollama lists every model it can serve; OpenAI servers may not
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None

    async def check(self, replica: Replica) -> None:
        """Probe one replica and move it to healthy, unhealthy or drifted."""
        try:
            async with asyncio.timeout(self.timeout):
                probe = await self._probe(replica)
        except (ReplicaFailure, GarrisonError) as exc:
            self._unhealthy(replica, exc.message)
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._unhealthy(replica, "probe timed out" if isinstance(exc, TimeoutError) else describe(exc))
            return
        finally:
            replica.checked_at = time.time()
        replica.revision = probe.revision
        reason = drift(self.pinned, probe, self.model)
        if reason is not None:
            if replica.state != "drifted":
                log.error("upstream %s of model %s is not routed to: it %s", replica.url, self.model, reason)
            replica.state, replica.reason = "drifted", f"it {reason}"
            return
        if self.require_listed and not probe.listed:
            self._unhealthy(replica, f"it does not serve model '{self.model}'")
            return
        if replica.state != "healthy":
            log.info("upstream %s of model %s is healthy", replica.url, self.model)
        self.router.readmit(replica)

    def _unhealthy(self, replica: Replica, reason: str) -> None:
        if replica.state not in ("unhealthy", "ejected"):
            log.warning("upstream %s of model %s failed its health check: %s", replica.url, self.model, reason)
        if replica.state != "ejected":  # an ejected replica serves out its cooldown
            replica.state = "unhealthy"
        replica.reason = reason

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(r) for r in self.router.replicas))

    def start(self) -> None:
        """Run the probes in the background (no-op when the interval is 0 or already running)."""
        if self.interval > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"health:{self.model}")

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
