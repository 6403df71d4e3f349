"""`garrison bench` through two load-balanced gateways, against one gateway and the engine itself, in one run.

Starts (all on loopback, in a temp dir): a PostgreSQL cluster (fsync on) and a redis-server (tests/backends.py);
ONE engine process, `garrison serve --no-auth` with the embedded model; two gateways, `garrison serve` with
`engine = "openai"` pointed at that engine, sharing the PostgreSQL store (`store.url`), the Redis limits
(`limits.url`) and one server secret; and Debian's nginx running deploy/nginx.conf (only its two server
addresses and its listen port rewritten, and an access log of the upstream each request went to).

Then `garrison bench` (a subprocess, the CLI as a user runs it) over the same key and prompts, at each
concurrency level, against three targets in shuffled order each round:
  pair      nginx -> gateway a | gateway b -> engine
  single    gateway a -> engine (the same gateway, the same shared state, no load balancer)
  engine    the engine directly (no auth, no audit: the floor)
Medians over rounds; ratios pair/single. Afterwards: how nginx spread requests, and `audit verify` of the
one chain both gateways appended to.

    flock /tmp/garrison-model.lock env PYTHONPATH=src:tests python benchmarks/two_gateways.py \
        [--concurrency 1,4,8] [--requests 16] [--rounds 2] [--output-tokens 32]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "engines" / "upstream"))

from peers import THREADS, Process, free_port  # noqa: E402

from backends import PostgresCluster, RedisServer, start_gateway  # noqa: E402
from garrison.security import connect  # noqa: E402
from garrison.security.principal import Limits  # noqa: E402
from garrison.settings import Settings  # noqa: E402

TARGETS = ("pair", "single", "engine")
METRICS = ("requests_per_s", "output_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "tpot_p50_ms")


def start_engine(home: Path) -> tuple[Process, str, str]:
    """The one engine: `garrison serve` with the embedded chat model, no auth (loopback), no embeddings."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "garrison", "serve", "--no-auth", "--no-embeddings", "--host", "127.0.0.1",
           "--port", str(port), "--home", str(home), "--threads", THREADS, "--context-length", "2048",
           "--max-concurrent", "8"]
    env = {k: v for k, v in os.environ.items() if k != "GARRISON_CONFIG"}
    engine = Process(cmd, f"{url}/health", f"engine on port {port}", env).start()
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return engine, url, models[0]["id"]


def nginx_config(work: Path, port: int, gateways: list[str]) -> Path:
    """deploy/nginx.conf with the two gateway addresses and the listen port of this run (nothing else changed),
    plus the paths a non-packaged run needs (pid, logs) and a log of which upstream served each request."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = " ".join(f"server {g.removeprefix('http://')};" for g in gateways)
    text, n = re.subn(r"server gateway-a:8400; server gateway-b:8400;", servers, text)
    text, m = re.subn(r"listen 8400;", f"listen 127.0.0.1:{port};", text)
    if (n, m) != (1, 1):
        raise SystemExit("deploy/nginx.conf no longer has the lines this benchmark rewrites")
    preamble = f"pid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
    logs = (f"log_format upstreams '$upstream_addr $status';\n  access_log {work}/access.log upstreams;\n"
            f"  client_body_temp_path {work}/body;\n  proxy_temp_path {work}/proxy;\n  ")
    text = preamble + text.replace("http {\n  ", "http {\n  " + logs, 1)
    path = work / "nginx.conf"
    path.write_text(text)
    return path


def bench(url: str, model: str, key: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "garrison", "bench", "--url", url, "--model", model, "--api-key", key,
           "--concurrency", args.concurrency, "--requests", str(args.requests), "--warmup", "1",
           "--input-tokens", str(args.input_tokens), "--output-tokens", str(args.output_tokens),
           "--ignore-eos", "--seed", "7", "--slo", "none", "--no-progress", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"garrison bench against {url} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def level_metrics(results: dict[str, Any]) -> dict[int, dict[str, float]]:
    by_level = {}
    for level in results["levels"]:
        s = level["summary"]
        by_level[int(level["concurrency"])] = {
            "requests_per_s": s["requests_per_s"], "output_tokens_per_s": s["output_tokens_per_s"],
            "ttft_p50_ms": s["ttft_ms"]["p50"], "ttft_p99_ms": s["ttft_ms"]["p99"],
            "e2e_p50_ms": s["e2e_ms"]["p50"], "tpot_p50_ms": s["tpot_ms"]["p50"],
            "completed": s["completed"], "failed": s["failed"],
        }
    return by_level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--requests", type=int, default=16, help="requests per level")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--input-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "two_gateways.json")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="garrison-2gw-"))
    started: list[Any] = []
    lb: subprocess.Popen[bytes] | None = None
    try:
        # its own temp dir: initdb runs as the `postgres` user, who may not enter `work`
        pg = PostgresCluster(Path(tempfile.mkdtemp(prefix="garrison-2gw-pg-")), fsync=True).init()
        started.append(pg)
        store_url = pg.database("garrison")
        (work / "redis").mkdir()
        redis_server = RedisServer(work / "redis").start()
        started.append(redis_server)
        engine, engine_url, model = start_engine(work / "engine")
        started.append(engine)
        secret = work / "server.secret"
        secret.write_text(secrets.token_hex(32) + "\n")  # the format load_server_secret reads
        secret.chmod(0o600)
        gateway_urls, gateway_procs = [], []
        for name in ("a", "b"):
            home = work / f"gateway-{name}"
            home.mkdir()
            config = home / "garrison.toml"
            config.write_text(
                f'[store]\nurl = "{store_url}"\n[auth]\nsecret_file = "{secret}"\n'
                f'[limits]\nurl = "{redis_server.url}"\n'
                f'[[models]]\nid = "chat"\nengine = "openai"\nupstreams = ["{engine_url}/v1"]\n'
                f'upstream_model = "{model}"\ntrust = "restricted"\n'
            )
            gateway = start_gateway(config, home)
            started.append(gateway)
            gateway_procs.append(gateway)
            gateway_urls.append(gateway.url)
        lb_port = free_port()
        conf = nginx_config(work, lb_port, gateway_urls)
        check = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SystemExit(f"nginx -t refused the config:\n{check.stderr}")
        lb = subprocess.Popen([nginx, "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.DEVNULL)
        lb_url = f"http://127.0.0.1:{lb_port}"
        deadline = time.monotonic() + 30
        while True:  # readiness poll of nginx itself
            try:
                if httpx.get(f"{lb_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or lb.poll() is not None:
                raise SystemExit("nginx did not come up")
            time.sleep(0.1)
        cli = Settings(home=work / "cli", store={"url": store_url}, auth={"secret_file": secret})
        security = connect(cli)
        try:
            token = security.keys.create(name="bench", env="dev", limits=Limits(rpm=100000)).token
        finally:
            security.close()
        urls = {"pair": (lb_url, token), "single": (gateway_urls[0], token), "engine": (engine_url, "unused")}
        models = {"pair": "chat", "single": "chat", "engine": model}
        for url, key in (*urls.values(), (gateway_urls[1], token)):  # each process's first request, uncounted
            for _ in range(2):
                httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                           json={"model": "chat" if key == token else model, "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "hi"}]}).raise_for_status()
        procs = {"gateway-a": gateway_procs[0], "gateway-b": gateway_procs[1], "engine": engine}
        cpu = {name: psutil.Process(p.proc.pid) for name, p in procs.items()}
        cpu_ms: dict[str, dict[str, list[float]]] = {t: {n: [] for n in cpu} for t in TARGETS}
        runs: dict[str, list[dict[int, dict[str, float]]]] = {t: [] for t in TARGETS}
        load_at_start = os.getloadavg()
        rng = random.Random(11)
        for round_no in range(args.rounds):
            order = list(TARGETS)
            rng.shuffle(order)
            for target in order:
                url, key = urls[target]
                print(f"round {round_no + 1}/{args.rounds}: {target}", flush=True)
                before = {n: sum(c.cpu_times()[:2]) for n, c in cpu.items()}
                results = bench(url, models[target], key, args, work / f"bench-{target}-{round_no}")
                runs[target].append(level_metrics(results))
                sent = sum(level["summary"]["completed"] for level in results["levels"])
                for n, c in cpu.items():  # CPU per completed request, in ms, of each process during this target
                    cpu_ms[target][n].append(round((sum(c.cpu_times()[:2]) - before[n]) * 1000 / max(sent, 1), 2))
        spread = collections.Counter(
            line.split()[0] for line in (work / "access.log").read_text().splitlines() if line.strip())
        security = connect(cli)
        try:
            verification = security.audit.verify()
            chain = {"ok": verification.ok, "records": verification.records,
                     "message": verification.describe()}
        finally:
            security.close()
        levels = sorted(runs["pair"][0])
        table: dict[str, dict[str, dict[str, float]]] = {}
        for level in levels:
            row: dict[str, dict[str, float]] = {}
            for target in TARGETS:
                row[target] = {m: round(statistics.median(r[level][m] for r in runs[target]), 3) for m in METRICS}
                row[target]["failed"] = sum(r[level]["failed"] for r in runs[target])
            row["pair_over_single"] = {m: round(row["pair"][m] / row["single"][m], 3) for m in METRICS
                                       if row["single"][m]}
            table[str(level)] = row
        names = {g.removeprefix("http://"): f"gateway-{n}" for g, n in zip(gateway_urls, "ab", strict=True)}
        document = {
            "benchmark": "two_gateways",
            "method": (f"garrison bench, {args.requests} requests per level, {args.input_tokens} input / "
                       f"{args.output_tokens} output tokens (ignore_eos), medians of {args.rounds} rounds, "
                       "targets shuffled each round"),
            "model": model,
            "shape": "nginx (deploy/nginx.conf, least_conn) -> 2 x garrison serve (PostgreSQL store fsync on, "
                     "Redis limits, auth + quotas + audit) -> 1 engine (garrison serve --no-auth, embedded llama.cpp)",
            "levels": table,
            "raw_rounds": runs,
            "cpu_ms_per_request": {t: {n: statistics.median(v) for n, v in per.items()} for t, per in cpu_ms.items()},
            "load_balancer_spread": {names.get(k, k): v for k, v in spread.items()},
            "audit_chain": chain,
            "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "load_avg_at_start": load_at_start,
                            "load_avg_at_end": os.getloadavg(), "platform": platform.platform()},
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")
        print(json.dumps({k: document[k] for k in ("levels", "cpu_ms_per_request", "load_balancer_spread",
                                                   "audit_chain")}, indent=2))
    finally:
        if lb is not None and lb.poll() is None:
            lb.terminate()
            lb.wait(timeout=15)
        for thing in reversed(started):
            thing.stop()
            if isinstance(thing, PostgresCluster):
                shutil.rmtree(thing.directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
