"""Added latency of auth + quota + audit per request, against the same server without them, side by side.

Starts three uvicorn servers on loopback from one app factory (a fake engine: no model is loaded):
  bare     app.state.security = None: no auth, no quotas, no audit (the middleware only adds request ids)
  no_auth  what `garrison serve --no-auth` runs: auth off, every request still audited (durable, fsynced)
  auth     auth on: key check, scope/model check, rpm/tpm/daily quotas, usage row, audit record
and times N sequential requests to each, interleaved round by round so drift hits all three alike.
The measured route is the real POST /v1/chat/completions (router, pipeline, middleware) over a canned
engine that answers "pong" at once with 12 prompt + 16 completion tokens: with security, the pipeline
authorizes, admits (quotas and a durable request.admitted record) and settles (usage row and
request.finished record, one durable commit).

    PYTHONPATH=src python benchmarks/auth_overhead.py [--requests 2000] [--out PATH.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from garrison.api.app import create_app
from garrison.audit import AuditEvent
from garrison.domain import GenerationDone, GenerationEvent, GenerationRequest, GenerationStarted, TokenDelta, Usage
from garrison.registry import ModelInfo, ModelRegistry
from garrison.security import Limits, Security, connect, setup
from garrison.service import InferenceService
from garrison.settings import AuthSettings, Settings

MODES = ("bare", "no_auth", "auth")
ROUTE = "POST /v1/chat/completions"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16}


class CannedEngine:
    """A fake engine: "pong" at once, 12 prompt + 16 completion tokens; no model is loaded."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        yield GenerationStarted(prompt_tokens=12)
        yield TokenDelta("pong", 16)
        yield GenerationDone("stop", Usage(prompt_tokens=12, completion_tokens=16))

    async def aclose(self) -> None:
        """Nothing to release."""


def build_app(security: Security | None, home: Path) -> FastAPI:
    """The real app (middleware, routers, pipeline) over the canned engine."""
    settings = Settings(home=home, engine={"embeddings": False})
    info = ModelInfo(id="bench", kind="generate", engine="canned", context_length=4096,
                     capabilities=frozenset({"chat", "completions"}))
    inference = InferenceService(ModelRegistry([info]), {"bench": CannedEngine()}, settings)
    return create_app(settings, inference, security)


def serve(mode: str, home: Path, port: int) -> None:
    """Child process: run one mode's server until killed."""
    security = None
    if mode != "bare":
        security = setup(Settings(home=home, auth=AuthSettings(enabled=mode == "auth", env="dev")))
    uvicorn.run(build_app(security, home), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bench_key(home: Path) -> str:
    """A dev key with every limit set (high), so each quota check runs on every request."""
    security = connect(Settings(home=home, auth=AuthSettings(env="dev")))
    try:
        limits = Limits(rpm=10**9, tpm=10**12, daily_tokens=10**15)
        return security.keys.create(
            name="bench", env="dev", scopes=["chat"], models=["bench"], limits=limits
        ).token
    finally:
        security.close()


def _start(mode: str, home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, __file__, "--serve", mode, "--home", str(home), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the {mode} server did not start")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(_percentile(ms, 90), 3),
        "p99_ms": round(_percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
    }


def run(requests: int, warmup: int, home_root: str | None) -> dict[str, Any]:
    """Start the three servers, time interleaved requests, and return the results."""
    root = Path(tempfile.mkdtemp(prefix="garrison-bench-", dir=home_root))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        homes = {mode: root / mode for mode in MODES}
        token = _bench_key(homes["auth"])
        urls = {}
        for mode in MODES:
            proc, urls[mode] = _start(mode, homes[mode], env)
            procs.append(proc)
        clients = {
            mode: httpx.Client(base_url=urls[mode], headers={"Authorization": f"Bearer {token}"})
            for mode in MODES
        }
        timings: dict[str, list[float]] = {mode: [] for mode in MODES}
        order = list(MODES)
        for i in range(warmup + requests):
            random.shuffle(order)
            for mode in order:
                started = time.perf_counter_ns()
                response = clients[mode].post("/v1/chat/completions", json=BODY)
                elapsed = (time.perf_counter_ns() - started) / 1e6
                if response.status_code != 200:
                    raise RuntimeError(f"{mode}: HTTP {response.status_code} {response.text}")
                if i >= warmup:
                    timings[mode].append(elapsed)
        for client in clients.values():
            client.close()
        audited = {mode: _audit_rows(homes[mode]) for mode in MODES}
        components = _components(root / "components", min(requests, 1000))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    modes = {mode: {**_summary(timings[mode]), "audit_records": audited[mode]} for mode in MODES}

    def added(a: str, b: str) -> dict[str, float]:
        return {k: round(modes[a][k] - modes[b][k], 3) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms")}

    return {
        "benchmark": "auth_overhead",
        "route": ROUTE,
        "route_detail": "the real chat route and pipeline over a canned engine: 12 prompt + 16 completion "
        "tokens; with security a durable request.admitted and request.finished record per request",
        "modes": {
            "bare": "app.state.security = None: no auth, no quotas, no audit (request ids only)",
            "no_auth": "auth disabled (--no-auth): every request audited (SQLite WAL, synchronous=FULL)",
            "auth": "auth on: key HMAC + lookup, scope/model check, rpm/tpm/daily quotas, usage row, audit",
        },
        "requests_per_mode": requests,
        "warmup_per_mode": warmup,
        "method": "sequential keep-alive requests, one httpx client per server, interleaved in shuffled "
        "order each round; latency is client-side wall time per request",
        "results": modes,
        "added_latency": {
            "auth_vs_bare": added("auth", "bare"),
            "auth_vs_no_auth": added("auth", "no_auth"),
            "no_auth_vs_bare": added("no_auth", "bare"),
        },
        "components_in_process": components,
        "environment": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "state_dir": str(root.parent),
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _components(home: Path, n: int) -> dict[str, Any]:
    """The same work without HTTP: the guard's checks (CPU only) and one durable usage + audit commit."""
    security = connect(Settings(home=home, auth=AuthSettings(env="dev")))
    try:
        limits = Limits(rpm=10**9, tpm=10**12, daily_tokens=10**15)
        token = security.keys.create(
            name="c", env="dev", scopes=["chat"], models=["bench"], limits=limits
        ).token
        guard_ms, commit_ms = [], []
        for i in range(n):
            started = time.perf_counter_ns()
            principal = security.guard.authenticate(f"Bearer {token}")
            security.guard.authorize(principal, "chat", "bench")
            grant = security.guard.admit(principal, 12, 16)  # in the store: one write transaction
            guard_ms.append((time.perf_counter_ns() - started) / 1e6)
            started = time.perf_counter_ns()
            with security.audit.transaction():
                security.guard.record_usage(principal, "bench", 12, 16, grant=grant)
                security.audit.append(
                    AuditEvent(
                        request_id=str(i),
                        method="POST",
                        route="/v1/chat/completions",
                        status=200,
                        key_id=principal.key_id,
                        model="bench",
                    )
                )
            commit_ms.append((time.perf_counter_ns() - started) / 1e6)
    finally:
        security.close()
    return {
        "guard_authenticate_authorize_admit": _summary(guard_ms),
        "usage_and_audit_commit_fsync": _summary(commit_ms),
        "samples": n,
    }


def _audit_rows(home: Path) -> int:
    db = home / "garrison.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Timed requests per mode.")
    parser.add_argument("--warmup", type=int, default=100, help="Untimed requests per mode first.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "auth_overhead.json")
    parser.add_argument(
        "--state-root", default=None, help="Where the servers' homes go (default: system temp)."
    )
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.home, args.port)
        return
    result = run(args.requests, args.warmup, args.state_root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'mode':<8} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'records':>8}")
    for mode in MODES:
        r = result["results"][mode]
        print(
            f"{mode:<8} {r['median_ms']:>10.3f} {r['p90_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{r['audit_records']:>8}"
        )
    for name, delta in result["added_latency"].items():
        print(f"added {name:<16} median {delta['median_ms']:+.3f} ms   p99 {delta['p99_ms']:+.3f} ms")
    for name, stats in result["components_in_process"].items():
        if isinstance(stats, dict):
            print(f"in-process {name:<36} median {stats['median_ms']:.3f} ms   p99 {stats['p99_ms']:.3f} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
