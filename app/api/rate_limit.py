"""Per-client rate limits: a token bucket per API key (or client address), 429 beyond it.

With ``RBMREC_RATE_LIMIT_PER_SECOND`` set, each client may send that many requests
per second on average and ``RBMREC_RATE_LIMIT_BURST`` at once; one more is answered
429 with ``Retry-After`` (the seconds until its bucket holds a token again). A
client is its bearer token (by its SHA-256: the key itself is never stored, not
even in Redis) or, without one, its address (the one a trusted proxy forwarded,
see :mod:`app.api.proxy`). The probes and ``/metrics`` are never limited.

Where the buckets live:

* with ``RBMREC_REDIS_URL``, in Redis, so every worker process and every replica
  draws from the same bucket: one Lua script reads, refills and takes a token
  atomically, on the Redis server's clock (:data:`TOKEN_BUCKET_LUA`);
* otherwise in the process (:class:`LocalBuckets`), so a client gets the limit once
  per worker process.

Redis that does not answer never fails a request: the check is skipped (fail open),
``rbmrec_rate_limit_backend_errors_total`` counts it, a warning is logged (once per
outage), and Redis is left alone for :data:`REDIS_BACKOFF_SECONDS` so that an outage
adds no latency to every request.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from typing import Final, Protocol

import redis.asyncio as redis_asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import problem_response
from app.api.load_shedding import is_exempt
from app.api.metrics import ApiMetrics

logger = logging.getLogger(__name__)

__all__ = [
    "REDIS_BACKOFF_SECONDS",
    "TOKEN_BUCKET_LUA",
    "TYPE_RATE_LIMITED",
    "Buckets",
    "LocalBuckets",
    "RateLimitMiddleware",
    "RedisBuckets",
    "client_key",
]

TYPE_RATE_LIMITED: Final = "urn:rbmrec:problem:rate-limited"

MAX_LOCAL_BUCKETS: Final = 10_000
"""Clients whose buckets a process keeps; the least recently seen are forgotten (a
forgotten bucket is a full one, so this only bounds memory)."""

REDIS_TIMEOUT_SECONDS: Final = 0.25
"""Connect and read timeout of a rate-limit check: a slow Redis must not slow the API."""

REDIS_BACKOFF_SECONDS: Final = 5.0
"""How long the checks are skipped after Redis failed to answer."""

TOKEN_BUCKET_LUA: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = t
end
tokens = math.min(burst, tokens + math.max(0, t - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""
"""Take one token from the bucket ``KEYS[1]`` (rate ``ARGV[1]`` per second, size
``ARGV[2]``); returns the seconds to wait for one, ``"0"`` when it was taken. A full
bucket expires, so idle clients cost Redis nothing. Floats travel as strings (Redis
truncates Lua numbers to integers)."""


class Buckets(Protocol):
    """Where the token buckets live."""

    async def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when taken, else the seconds until one is there."""

    async def aclose(self) -> None:
        """Release connections (the app's lifespan ends)."""


class LocalBuckets:
    """Token buckets in this process (a bounded, least-recently-used table)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str) -> float:
        now = time.monotonic()
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_LOCAL_BUCKETS:
            self._buckets.popitem(last=False)
        return wait

    async def aclose(self) -> None:
        self._buckets.clear()


class RedisBuckets:
    """Token buckets in Redis, shared by every process that uses the same URL.

    The client is made on first use, on the event loop that serves the requests,
    and closed by :meth:`aclose` when the app stops.
    """

    def __init__(self, url: str, rate: float, burst: int, metrics: ApiMetrics) -> None:
        self.url = url
        self.rate = rate
        self.burst = burst
        self.metrics = metrics
        self._client: redis_asyncio.Redis | None = None
        self._script: AsyncScript | None = None
        self._skip_until = 0.0
        self._failing = False

    async def take(self, key: str) -> float:
        if time.monotonic() < self._skip_until:
            self.metrics.rate_limit_errors.inc()
            return 0.0
        try:
            # EVALSHA, and the script is loaded again when Redis lost it (a restart)
            result = await self._bucket_script()(
                keys=[f"rbmrec:ratelimit:{key}"], args=[repr(self.rate), str(self.burst)]
            )
        except (RedisError, OSError) as exc:
            return self._fail_open(exc)
        return self._answer(result)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client, self._script = self._client, None, None
            await client.aclose()

    # -- internals -------------------------------------------------------------------
    def _bucket_script(self) -> AsyncScript:
        if self._client is None or self._script is None:
            self._client = redis_asyncio.Redis.from_url(
                self.url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._script = self._client.register_script(TOKEN_BUCKET_LUA)
        return self._script

    def _answer(self, result: object) -> float:
        if self._failing:
            self._failing = False
            logger.info("the rate limits' Redis answers again: limits are enforced again")
        text = result.decode() if isinstance(result, bytes) else str(result)
        return float(text)

    def _fail_open(self, exc: BaseException) -> float:
        self.metrics.rate_limit_errors.inc()
        self._skip_until = time.monotonic() + REDIS_BACKOFF_SECONDS
        if not self._failing:
            self._failing = True
            logger.warning(
                "the rate limits' Redis does not answer (%s: %s): requests are let through "
                "unlimited until it does",
                type(exc).__name__,
                exc,
            )
        return 0.0


def client_key(scope: Scope) -> str:
    """The bucket of a request: its bearer token's SHA-256, else the client address."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                return "key:" + hashlib.sha256(token).hexdigest()
            break
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """Answer 429 with ``Retry-After`` when the client's bucket is empty."""

    def __init__(
        self, app: ASGIApp, buckets: Buckets, metrics: ApiMetrics, rate: float, burst: int
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.metrics = metrics
        self.rate = rate
        self.burst = burst

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        wait = await self.buckets.take(client_key(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        self.metrics.rate_limited.inc()
        retry_after = max(1, math.ceil(wait))
        response = problem_response(
            429,
            f"the rate limit of {self.rate:g} requests per second (bursts of {self.burst}) "
            f"for this API key or client address is exceeded; retry in {retry_after} s",
            title="Rate limit exceeded",
            type=TYPE_RATE_LIMITED,
            instance=scope["path"],
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)
