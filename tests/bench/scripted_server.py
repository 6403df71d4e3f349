"""A scripted streaming server with known timing, run in its own process so the client cannot disturb it."""

# The model id is the script: `ttft=300,itl=20,jitter=4,tokens=16` (ms, ms, +/- ms uniform, chunks), and
# optionally `per_chunk=K` (tokens per chunk, reported through usage), `usage=0` (never send usage),
# `status=503` (fail with that HTTP status), `fail_after=N` (an error event after N chunks) or
# `drop_after=N` (close the socket after N chunks) or `stale=1` (answer one request per connection, keep it
# open as if kept alive, then close it on reading the next request, unanswered: a keep-alive connection the
# server had closed, as llama-server does). POST /v1/chat/completions streams SSE, POST /api/chat
# streams Ollama NDJSON. GET /truth returns what was sent and when; POST /reset clears it.
#
# The truth is taken so that a busy machine cannot blur it: one thread per connection, and the moment a
# request arrived is the kernel's receive timestamp (SO_TIMESTAMPNS), not when this process got to read it.
# Each write is stamped just before it is sent. All times are time.time() seconds. Prints its port.

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import threading
import time
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TRUTH: list[dict[str, Any]] = []
LOCK = threading.Lock()


def parse_script(model: str) -> dict[str, float]:
    """Read `key=value,...` from the model id; other text is ignored."""
    script: dict[str, float] = {}
    for part in model.split(","):
        key, _, value = part.partition("=")
        try:
            script[key.strip()] = float(value)
        except ValueError:
            continue
    return script


def frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def sse(data: dict[str, Any] | str) -> bytes:
    """One SSE event."""
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


class Connection:
    """One client connection: reads requests with their kernel arrival time and streams scripted answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.arrived = 0.0
        self.answered = 0
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _fill(self) -> bool:
        data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        if not data:
            return False
        self.buffer += data
        self.arrived = time.time()
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", payload[:16])
                self.arrived = seconds + nanoseconds / 1e9
        return True

    def read_request(self) -> tuple[str, str, dict[str, str], bytes, float] | None:
        """Method, path, headers, body and the kernel time the request's last byte arrived."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                return None
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            if not self._fill():
                return None
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return method, path, headers, body, self.arrived

    def serve(self) -> None:
        """Answer requests until the client closes or a script drops the connection."""
        try:
            while (request := self.read_request()) is not None:
                method, path, headers, body, arrived = request
                if method == "GET" and path == "/truth":
                    with LOCK:
                        data = json.dumps(TRUTH).encode()
                    self.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
                elif method == "POST" and path == "/reset":
                    with LOCK:
                        TRUTH.clear()
                    self.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                elif method == "POST" and path in ("/v1/chat/completions", "/api/chat"):
                    if not self.stream(path, json.loads(body or b"{}"), headers, arrived):
                        return
                else:
                    self.sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
        finally:
            self.sock.close()

    def send(self, payload: bytes, record: dict[str, Any] | None = None) -> None:
        """Write now, stamping the time just before the write when it carries a token."""
        if record is not None:
            record["writes"].append(time.time())
        self.sock.sendall(payload)

    def stream(self, path: str, body: dict[str, Any], headers: dict[str, str], arrived: float) -> bool:
        """Stream the scripted answer; False when the script dropped the connection."""
        model = str(body.get("model", ""))
        script = parse_script(model)
        ollama = path == "/api/chat"
        if script.get("stale") and self.answered:
            with LOCK:
                TRUTH.append({"path": path, "body": body, "dropped": True, "received": arrived, "writes": []})
            self.sock.close()
            return False
        self.answered += 1
        status = int(script.get("status", 200))
        if status != 200:
            message = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
            self.send(
                b"HTTP/1.1 %d Scripted\r\nContent-Length: %d\r\n\r\n%s" % (status, len(message), message)
            )
            return True
        default = body.get("options", {}).get("num_predict") if ollama else body.get("max_tokens")
        tokens = int(script.get("tokens", default or 16))
        per_chunk = int(script.get("per_chunk", 1))
        jitter = script.get("jitter", 0.0)
        record: dict[str, Any] = {"path": path, "body": body, "authorization": headers.get("authorization")}
        record.update({"received": arrived, "writes": []})
        with LOCK:
            TRUTH.append(record)
            rng = random.Random(len(TRUTH))
        kind = b"application/x-ndjson" if ollama else b"text/event-stream"
        self.send(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % kind)
        due = arrived + script.get("ttft", 0.0) / 1000.0
        for i in range(tokens):
            time.sleep(max(0.0, due - time.time()))
            if i == script.get("drop_after"):
                self.sock.close()
                return False
            if i == script.get("fail_after"):
                error = (
                    {"error": "scripted failure"} if ollama else {"error": {"message": "scripted failure"}}
                )
                self.send(frame(json.dumps(error).encode() + b"\n" if ollama else sse(error)) + frame(b""))
                return True
            text = " tok" * per_chunk
            if ollama:
                line = {"model": model, "message": {"role": "assistant", "content": text}, "done": False}
                payload = frame(json.dumps(line).encode() + b"\n")
            else:
                delta = {"index": 0, "delta": {"content": text}}
                payload = frame(sse({"object": "chat.completion.chunk", "model": model, "choices": [delta]}))
            self.send(payload, record)
            due = record["writes"][-1] + (script.get("itl", 0.0) + rng.uniform(-jitter, jitter)) / 1000.0
        self.finish(body, script, ollama, tokens * per_chunk)
        return True

    def finish(self, body: dict[str, Any], script: dict[str, float], ollama: bool, out_tokens: int) -> None:
        """The closing usage chunk / done line (when scripted) and the end of the chunked body."""
        with_usage = script.get("usage", 1) != 0
        if ollama:
            done: dict[str, Any] = {"message": {"role": "assistant", "content": ""}, "done": True}
            if with_usage:
                done.update({"eval_count": out_tokens, "prompt_eval_count": 42})
            self.send(frame(json.dumps(done).encode() + b"\n") + frame(b""))
            return
        tail = b""
        if with_usage and body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 42, "completion_tokens": out_tokens, "total_tokens": 42 + out_tokens}
            tail += frame(sse({"object": "chat.completion.chunk", "choices": [], "usage": usage}))
        self.send(tail + frame(sse("[DONE]")) + frame(b""))


def main(port: int) -> None:
    """Listen on 127.0.0.1, print the port, and serve each connection in its own thread."""
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    print(listener.getsockname()[1], flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=Connection(sock).serve, daemon=True).start()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    main(parser.parse_args().port)
