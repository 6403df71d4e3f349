"""Gateway overhead: the latency garrison adds in front of an OpenAI-compatible engine, next to LiteLLM's proxy.

One fast mock OpenAI upstream (raw asyncio on uvloop, canned answers: no engine, no sleeps) runs in its own
process. The same chat completions, non-streamed and streamed, go to it
  direct            straight to the mock
  garrison          through `garrison serve` (auth + quotas + audit on, group commit on), engine = "openai"
  garrison_answer   the same with `audit.durability = "answer"` (one fsync per request instead of two)
  garrison_nogroup  garrison with `audit.group_commit = false` (each request commits alone: two fsyncs)
  floor             the least a Python gateway can do: a FastAPI route that relays the body to the mock over a
                    pooled aiohttp session (uvicorn, uvloop, httptools), no auth, no quotas, no audit
  litellm           through LiteLLM's proxy (one worker, its own venv, the same mock, a master key)
at concurrency 1, 16 and 64, interleaved round by round in shuffled order so drift hits every target alike.
Added latency is a target's percentile minus direct's; requests/s at saturation is the c=64 rate; RSS of the
garrison process is read before and after a soak of `--soak` requests. CPU time per request of each gateway
process (user and system, all its threads) is read around its segments at every level, and an fsync-ed SQLite commit
on the gateways' disk is timed: together with `floor` they bound what any Python gateway with a durable audit
record can add here.

    PYTHONPATH=src python benchmarks/gateway_overhead.py [--litellm /tmp/litellm-venv/bin/litellm]
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from fastapi import Request  # at module level: the floor route's annotation is resolved from here

LEVELS = (1, 16, 64)
# garrison's configurations: name, audit.group_commit, audit.durability
GATEWAYS = (
    ("garrison", True, "admission"), ("garrison_answer", True, "answer"), ("garrison_nogroup", False, "admission"),
)
KINDS = ("whole", "stream")
MODEL = "bench"
MASTER_KEY = "sk-litellm-bench-master"
# The client closes idle connections before the gateways' uvicorn does (5 s), so a target left idle while the
# others run never gets a request on a connection its server is closing.
_KEEPALIVE_S = 4.0
_REPLY = json.dumps({
    "id": "cmpl-mock", "object": "chat.completion", "created": 0, "model": "mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong " * 8}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
}).encode()


def _sse_body() -> bytes:
    def event(payload: dict[str, Any]) -> bytes:
        data = b"data: " + json.dumps(payload).encode() + b"\n\n"
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    base = {"id": "cmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock"}
    parts = [event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    parts += [event({**base, "choices": [{"index": 0, "delta": {"content": "pong "}}]}) for _ in range(8)]
    parts.append(event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    parts.append(event({**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 8,
                                                          "total_tokens": 20}}))
    done = b"data: [DONE]\n\n"
    parts.append(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
    return b"".join(parts)


_MODELS = json.dumps({"object": "list", "data": [{"id": "mock", "object": "model", "root": "mock-rev"}]}).encode()
_WHOLE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(_REPLY) + _REPLY
_LISTING = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(_MODELS) + _MODELS
_STREAM = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           + _sse_body())


class MockUpstream(asyncio.Protocol):
    """HTTP/1.1 keep-alive with canned answers: the fastest OpenAI server this machine can run."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            if head.startswith(b"GET"):
                self.transport.write(_LISTING)
            elif b'"stream":true' in body or b'"stream": true' in body:
                self.transport.write(_STREAM)
            else:
                self.transport.write(_WHOLE)


def serve_mock(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(MockUpstream, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


def serve_floor(port: int, upstream: str) -> None:
    """The `floor` target: the HTTP work every Python gateway does, and nothing else (no checks, no records)."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import Response, StreamingResponse

    app = FastAPI()
    pool: dict[str, aiohttp.ClientSession] = {}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        session = pool.get("s") or pool.setdefault("s", aiohttp.ClientSession())
        upstream_response = await session.post(upstream + "/chat/completions", json={**body, "model": "mock"})
        if not body.get("stream"):
            async with upstream_response:
                return Response(await upstream_response.read(), media_type="application/json")

        async def relay() -> Any:
            async with upstream_response:
                async for chunk in upstream_response.content.iter_any():
                    yield chunk

        return StreamingResponse(relay(), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")


def fsync_commit_ms(directory: Path, n: int = 200) -> dict[str, float]:
    """One small SQLite commit with synchronous=FULL in WAL mode (what one durable audit record waits for)."""
    conn = sqlite3.connect(directory / "fsync-probe.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x TEXT)")
        times = []
        for _ in range(n):
            started = time.perf_counter_ns()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 300,))
            conn.execute("COMMIT")
            times.append((time.perf_counter_ns() - started) / 1e6)
    finally:
        conn.close()
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(_percentile(times, 99), 3), "n": n}


def _garrison_config(path: Path, upstream: str, group_commit: bool, durability: str = "admission") -> None:
    """The garrison.toml of a benchmark gateway: auth on, no local model, one upstream model."""
    path.write_text(
        "default_model = false\n"
        "[engine]\nembeddings = false\nmax_queue = 1024\n"
        '[auth]\nenabled = true\nenv = "dev"\n'
        f"[audit]\ngroup_commit = {'true' if group_commit else 'false'}\n"
        + (f'durability = "{durability}"\n' if durability != "admission" else "")  # a --baseline may predate it
        + f'[[models]]\nid = "{MODEL}"\nengine = "openai"\nupstreams = ["{upstream}"]\nupstream_model = "mock"\n'
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, headers: dict[str, str] | None = None,
                deadline_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {deadline_s} s")


def _bench_key(home: Path) -> str:
    from garrison.security import Limits, connect
    from garrison.settings import AuthSettings, Settings

    security = connect(Settings(home=home, auth=AuthSettings(env="dev")))
    try:
        limits = Limits(rpm=10**9, tpm=10**12, daily_tokens=10**15)
        return security.keys.create(name="bench", env="dev", scopes=["chat"], models=[MODEL], limits=limits).token
    finally:
        security.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(ms), 3), "p90_ms": round(_percentile(ms, 90), 3),
            "p99_ms": round(_percentile(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


class Target:
    def __init__(self, name: str, base: str, token: str | None, pid: int | None) -> None:
        self.name, self.base, self.pid = name, base, pid
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.model = "mock" if name in ("direct", "floor") else MODEL

    def body(self, stream: bool) -> bytes:
        return json.dumps({"model": self.model, "messages": [{"role": "user", "content": "ping"}],
                           "max_tokens": 16, "stream": stream}).encode()

    def rss_mb(self) -> float | None:
        return round(psutil.Process(self.pid).memory_info().rss / 2**20, 1) if self.pid else None

    def cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) the target's process has used so far."""
        times = psutil.Process(self.pid).cpu_times() if self.pid else None
        return times.user + times.system if times else 0.0


async def _segment(session: aiohttp.ClientSession, target: Target, stream: bool, n: int, concurrency: int,
                   latencies: list[float]) -> float:
    """`n` requests at `concurrency`; appends each latency (ms, to the last byte); returns the wall time."""
    url = target.base + "/chat/completions"
    body = target.body(stream)
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter_ns()
            async with session.post(url, data=body, headers=target.headers) as response:
                payload = await response.read()
                if response.status != 200 or (stream and b"[DONE]" not in payload):
                    raise RuntimeError(f"{target.name}: HTTP {response.status} {payload[:300]!r}")
            latencies.append((time.perf_counter_ns() - started) / 1e6)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _measure(targets: list[Target], counts: dict[int, int], rounds: int, warmup: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=_KEEPALIVE_S)
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        for target in targets:
            for stream in (False, True):
                await _segment(session, target, stream, warmup, 8, [])
        for concurrency in LEVELS:
            for kind in KINDS:
                stream = kind == "stream"
                lat: dict[str, list[float]] = {t.name: [] for t in targets}
                wall: dict[str, float] = {t.name: 0.0 for t in targets}
                cpu: dict[str, float] = {t.name: 0.0 for t in targets}
                per_round = max(concurrency, counts[concurrency] // rounds)
                for _ in range(rounds):
                    order = list(targets)
                    random.shuffle(order)
                    for target in order:
                        before = target.cpu_s()
                        wall[target.name] += await _segment(session, target, stream, per_round, concurrency,
                                                            lat[target.name])
                        cpu[target.name] += target.cpu_s() - before
                level: dict[str, Any] = {}
                for target in targets:
                    level[target.name] = {**_summary(lat[target.name]),
                                          "requests_per_s": round(len(lat[target.name]) / wall[target.name], 1),
                                          "cpu_ms_per_request": round(cpu[target.name] / len(lat[target.name])
                                                                      * 1e3, 3)}
                direct = level["direct"]
                for target in targets[1:]:
                    row = level[target.name]
                    row["added_p50_ms"] = round(row["p50_ms"] - direct["p50_ms"], 3)
                    row["added_p99_ms"] = round(row["p99_ms"] - direct["p99_ms"], 3)
                results[f"c{concurrency}_{kind}"] = level
                print(f"c={concurrency:<3} {kind:<6} " + "  ".join(
                    f"{t.name} p50 {level[t.name]['p50_ms']:.2f} p99 {level[t.name]['p99_ms']:.2f} "
                    f"{level[t.name]['requests_per_s']:.0f}/s" for t in targets), flush=True)
    return results


async def _soak(target: Target, n: int, concurrency: int, budget_s: float) -> dict[str, Any]:
    """`n` requests (half streamed) at `concurrency`, stopping early at `budget_s`; RSS sampled as it goes."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=_KEEPALIVE_S)
    samples: list[tuple[int, float | None]] = [(0, target.rss_mb())]
    done = 0
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        step = max(1000, n // 10)
        while done < n and time.monotonic() - started < budget_s:
            chunk = min(step, n - done)
            await _segment(session, target, False, chunk // 2, concurrency, [])
            await _segment(session, target, True, chunk - chunk // 2, concurrency, [])
            done += chunk
            samples.append((done, target.rss_mb()))
    return {"requests": done, "requested": n, "seconds": round(time.monotonic() - started, 1),
            "rss_mb_before": samples[0][1], "rss_mb_after": samples[-1][1],
            "rss_mb_samples": [{"requests": k, "rss_mb": v} for k, v in samples]}


def _litellm_config(path: Path, mock: str) -> None:
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        "      model: openai/mock\n"
        f"      api_base: {mock}\n"
        "      api_key: sk-mock\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


def _audit_rows(home: Path) -> int:
    with sqlite3.connect(home / "garrison.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="garrison-gateway-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, **kw)
        procs.append(proc)
        return proc

    try:
        mock_port = _free_port()
        mock = start([sys.executable, __file__, "--serve-mock", str(mock_port)], env=env)
        mock_base = f"http://127.0.0.1:{mock_port}/v1"
        _wait_ready(mock_base + "/models", mock, "the mock upstream")
        targets = [Target("direct", mock_base, None, mock.pid)]
        homes: dict[str, Path] = {}
        gateways = [(name, group, durability, env) for name, group, durability in GATEWAYS
                    if args.gateways is None or name in args.gateways]
        if args.baseline:  # the default configuration, served from another source tree (the code before a change)
            src = str(args.baseline.resolve())
            gateways.append(("garrison_before", True, "admission", {**env, "PYTHONPATH": src}))
        for name, group, durability, genv in gateways:
            home = homes[name] = root / name
            token = _bench_key(home)
            port = _free_port()
            config = root / f"{name}.toml"
            _garrison_config(config, mock_base, group, durability)
            proc = start([sys.executable, "-m", "garrison", "serve", "--config", str(config), "--home", str(home),
                          "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=genv,
                         stderr=subprocess.DEVNULL)
            _wait_ready(f"http://127.0.0.1:{port}/health", proc, name)
            targets.append(Target(name, f"http://127.0.0.1:{port}/v1", token, proc.pid))
        if args.floor:
            port = _free_port()
            proc = start([sys.executable, __file__, "--serve-floor", str(port), mock_base], env=env,
                         stderr=subprocess.DEVNULL)
            _wait_ready(f"http://127.0.0.1:{port}/health", proc, "floor")
            targets.append(Target("floor", f"http://127.0.0.1:{port}/v1", None, proc.pid))
        litellm_version = None
        if args.litellm:
            cfg = root / "litellm.yaml"
            _litellm_config(cfg, mock_base)
            port = _free_port()
            lenv = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            lenv.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
            proc = start([args.litellm, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                          "--num_workers", "1"], env=lenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, "litellm")
            targets.append(Target("litellm", f"http://127.0.0.1:{port}/v1", MASTER_KEY, proc.pid))
            out = subprocess.run([args.litellm, "--version"], capture_output=True, text=True, env=lenv, check=False)
            litellm_version = out.stdout.strip().rpartition('=')[2].strip() or None
        counts = {1: args.requests_c1, 16: args.requests_c16, 64: args.requests_c64}
        fsync = fsync_commit_ms(root)
        rss_start = {t.name: t.rss_mb() for t in targets}
        levels = asyncio.run(_measure(targets, counts, args.rounds, args.warmup))
        soaks = {}
        for target in targets[1:]:
            n = args.soak if target.name == "garrison" else args.soak_others
            if n:
                soaks[target.name] = asyncio.run(_soak(target, n, 16, args.soak_budget))
                print(f"soak {target.name}: {soaks[target.name]['requests']} requests in "
                      f"{soaks[target.name]['seconds']} s, RSS {soaks[target.name]['rss_mb_before']} -> "
                      f"{soaks[target.name]['rss_mb_after']} MB", flush=True)
        audited = {name: _audit_rows(home) for name, home in homes.items()}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)

    def ratio(level: dict[str, Any], gateway: str, key: str) -> float | None:
        if "litellm" not in level or gateway not in level or level[gateway][key] <= 0:
            return None
        return round(level["litellm"][key] / level[gateway][key], 1)

    comparison = {name: {f"litellm_over_{gateway}_added_{q}": ratio(level, gateway, f"added_{q}_ms")
                         for gateway in ("garrison_before", "garrison", "garrison_answer") for q in ("p50", "p99")
                         if gateway in level}
                  for name, level in levels.items()}
    saturation = {kind: {t: levels[f"c64_{kind}"][t]["requests_per_s"] for t in levels[f"c64_{kind}"]}
                  for kind in KINDS}
    return {
        "benchmark": "gateway_overhead",
        "route": "POST /v1/chat/completions (max_tokens 16; streamed: 8 content chunks + finish + usage + [DONE])",
        "targets": {
            "direct": "the mock upstream itself (raw asyncio on uvloop, canned answers)",
            "garrison": "`garrison serve --config` (uvicorn with uvloop and httptools): API key check, scope/model "
                        "check, rpm/tpm/daily quotas, usage + audit records durable before the answer (group commit), "
                        "engine = 'openai' over one pooled replica",
            "garrison_answer": "the same with audit.durability = 'answer': the admission commits without its own "
                               "fsync and is made durable with the request's end, before the answer (one fsync "
                               "per request, shared by group commit)",
            "garrison_nogroup": "garrison with audit.group_commit = false (its own fsyncs, two per request)",
            "floor": "a FastAPI route relaying the body to the mock over a pooled aiohttp session (uvicorn, uvloop, "
                     "httptools): the HTTP work any Python gateway does, with no auth, quotas or audit",
            **({"garrison_before": f"garrison's default configuration served from {args.baseline} (the code before "
                                   "this change), same run"} if args.baseline else {}),
            "litellm": f"LiteLLM proxy {litellm_version or '(not run)'}, one worker, master key, no database, "
                       "uvloop + httptools installed in its venv too",
        },
        "method": "client: aiohttp on this machine, keep-alive; each level runs every target in shuffled order "
                  f"for {args.rounds} rounds; latency is client-side time to the last byte; added = target "
                  "percentile minus direct percentile; requests/s = requests / time inside that target's "
                  "segments",
        "levels": levels,
        "litellm_vs_garrison": comparison,
        "requests_per_s_at_saturation_c64": saturation,
        "durable_commit_ms": fsync,
        "rss_mb_at_start": rss_start,
        "soak": soaks,
        "audit_records": audited,
        "environment": {
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "note": "one 2-core machine shared with other work: client, mock and gateway compete for the cores",
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The docs/upstreams.md table: added latency per target and level, rates at c=64, RSS over the soak."""
    names = ("garrison_before", "garrison", "garrison_answer", "garrison_nogroup", "floor", "litellm")
    gateways = [name for name in names if name in result["levels"]["c1_whole"]]
    lines = ["| level | " + " | ".join(f"{g} added p50 / p99 (ms)" for g in gateways)
             + " | LiteLLM / garrison (p50) | LiteLLM / garrison_answer (p50) |",
             "| --- |" + " --- |" * (len(gateways) + 2)]
    for name, level in result["levels"].items():
        cells = [f"{level[g]['added_p50_ms']:.2f} / {level[g]['added_p99_ms']:.2f}" for g in gateways]
        ratios = [result["litellm_vs_garrison"][name].get(f"litellm_over_{g}_added_p50")
                  for g in ("garrison", "garrison_answer")]
        lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{r}x" if r else "-" for r in ratios) + " |")
    rates = result["requests_per_s_at_saturation_c64"]
    lines += ["", "| requests/s at c=64 | direct | " + " | ".join(gateways) + " |",
              "| --- |" + " --- |" * (len(gateways) + 1)]
    for kind, row in rates.items():
        lines.append(f"| {kind} | {row['direct']:.0f} | " + " | ".join(f"{row[g]:.0f}" for g in gateways) + " |")
    c1_whole, c1_stream = result["levels"]["c1_whole"], result["levels"]["c1_stream"]
    if "cpu_ms_per_request" in c1_whole["direct"]:
        lines += ["", "| CPU ms a request, c=1 (whole / stream) | direct (the mock) | " + " | ".join(gateways) + " |",
                  "| --- |" + " --- |" * (len(gateways) + 1),
                  "| | " + " | ".join(f"{c1_whole[t]['cpu_ms_per_request']:.2f} / "
                                       f"{c1_stream[t]['cpu_ms_per_request']:.2f}"
                                       for t in ("direct", *gateways)) + " |"]
    if "durable_commit_ms" in result:
        commit = result["durable_commit_ms"]
        lines += ["", f"One durable SQLite commit (WAL, synchronous=FULL) on this disk: p50 {commit['p50_ms']} ms, "
                  f"p99 {commit['p99_ms']} ms."]
    lines += ["", "| soak | requests | seconds | RSS before (MB) | RSS after (MB) |", "| --- | --- | --- | --- | --- |"]
    for name, soak in result["soak"].items():
        lines.append(f"| {name} | {soak['requests']} | {soak['seconds']} | {soak['rss_mb_before']} | "
                     f"{soak['rss_mb_after']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm",
                        help="LiteLLM's CLI in its own venv ('' skips it).")
    parser.add_argument("--requests-c1", type=int, default=1500)
    parser.add_argument("--requests-c16", type=int, default=3000)
    parser.add_argument("--requests-c64", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--baseline", type=Path, help="Also serve garrison (default settings) from this src/ "
                        "directory, as the target garrison_before: the code before a change, in the same run.")
    parser.add_argument("--gateways", nargs="*", choices=[name for name, _, _ in GATEWAYS],
                        help="Only these of garrison's configurations (default: all; quick iterations).")
    parser.add_argument("--soak", type=int, default=100_000, help="Requests for garrison's RSS soak.")
    parser.add_argument("--soak-others", type=int, default=10_000, help="Soak requests for the other gateways.")
    parser.add_argument("--soak-budget", type=float, default=180.0, help="Seconds a soak may take at most.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gateway_overhead.json")
    parser.add_argument("--table", type=Path, help="Print the markdown table of a results file and exit.")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="Leave out the floor target (a bare FastAPI + aiohttp relay).")
    parser.add_argument("--serve-mock", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return
    if args.serve_mock:
        serve_mock(args.serve_mock)
        return
    if args.serve_floor:
        serve_floor(int(args.serve_floor[0]), args.serve_floor[1])
        return
    if args.litellm and not Path(args.litellm).exists():
        parser.error(f"{args.litellm} not found: pip install 'litellm[proxy]' into a separate venv, or --litellm ''")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
