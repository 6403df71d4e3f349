"""Pooled keep-alive HTTP connections to a model's replicas: one aiohttp session, made in the serving loop."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp


class ClientPool:
    """Keep-alive connections (up to `max_connections` per replica), with the upstream key on every request.

    The session is created on first use inside the running event loop (engines are built before the server's
    loop starts) and again if a different loop uses the engine.
    """

    def __init__(
        self, *, max_connections: int, connect_timeout: float, api_key: str | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never show the key
        return f"ClientPool(max_connections={self._max_connections})"

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self._max_connections, keepalive_timeout=60, ttl_dns_cache=300,
                ssl=self._tls if self._tls is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                skip_auto_headers=("User-Agent",),
                raise_for_status=False,
                # one session serves every caller: a cookie an upstream sets must never ride on another
                # caller's request (and no jar to consult or update on the hot path)
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()
