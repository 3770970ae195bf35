"""Client SDK of the port: ask ``/v1/check`` over HTTP, signed per SPEC §3, and never hang or
fail open by accident.

Failure rules, in the order they apply:

- A decision the port answered is final, whatever its HTTP status (a deny, a 400, a 503
  ``AUDIT_UNAVAILABLE``): it is returned as is and never retried.
- A connection that could not be made is retried with exponential backoff (the request never
  reached the port, so retrying cannot double-count). A request that may have reached it
  (timeout, connection dropped mid-answer) is retried only when it consumes nothing
  (``quantity == 0``): a metered check must not be consumed twice.
- When the port cannot be asked, the answer is a client-side deny with reason
  ``PORT_UNREACHABLE`` (fail closed). Features listed in ``fail_open_features`` get an
  ``alert`` instead: the service proceeds and the alert says someone must look.

Worst case for one call: ``(retries + 1) * timeout_s`` plus the backoff sleeps.

Repeats are served from a cache for the ``cache_ttl_s`` the port gave; the port gives 0 to
anything metered or denied, and the client never caches ``quantity > 0`` or client-side answers.
Imports stay light (aiohttp and the standard library): a service embedding only the client does
not load the analytics stack.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from dataclasses import replace
from typing import Any, Iterable, Mapping

import aiohttp
from yarl import URL

from gateway.auth import signed_headers
from gateway.checks import MAX_BATCH
from gateway.decision import Decision, check_request
from gateway.engine import any_match
from gateway.loopthread import LoopThread

log = logging.getLogger("portcullis.client")
_NEVER_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_MAYBE_SENT = (aiohttp.ClientError, asyncio.TimeoutError)  # checked after _NEVER_SENT


class _Unreachable(Exception):
    """No decision could be had from the port; the message says why (safe to show)."""


class DecisionCache:
    """Decisions by what was asked, each kept for the TTL the port gave it; bounded in size."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[tuple, tuple[float, Decision]] = {}

    def get(self, key: tuple, now: float) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: tuple, decision: Decision, now: float) -> None:
        if self.size <= 0 or decision.cache_ttl_s <= 0 or decision.http_status != 200:
            return
        if key not in self._entries and len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # the oldest insertion goes first
        self._entries[key] = (now + decision.cache_ttl_s, decision)


def _cache_key(doc: Mapping[str, Any]) -> tuple | None:
    if doc.get("quantity"):
        return None
    return doc["license_key"], doc["feature"], doc.get("user_id"), doc.get("product"), doc.get("environment")


class PortClient:
    """Async client of one port. Use ``async with PortClient(...) as port:`` or call ``close()``.

    Requests are HMAC-signed with ``key_id`` and ``secret``. A caller known by its client
    certificate instead (mTLS) passes neither, and an ``ssl_context`` holding that certificate.
    """

    def __init__(self, base_url: str, key_id: str | None = None, secret: str | None = None, *,
                 timeout_s: float = 2.0, connect_timeout_s: float = 0.5, retries: int = 2, backoff_s: float = 0.05,
                 cache_size: int = 10_000, fail_open_features: Iterable[str] = (),
                 ssl_context: ssl.SSLContext | bool = True) -> None:
        url = URL(base_url)
        self._url, self._prefix = url, url.path.rstrip("/")
        self._key_id, self._secret = key_id, secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self.retries, self.backoff_s = retries, backoff_s
        self.cache = DecisionCache(cache_size)
        self.fail_open_features = tuple(fail_open_features)
        self._ssl = ssl_context  # e.g. a private CA, or a client certificate for mTLS
        self._session: aiohttp.ClientSession | None = None

    async def check(self, *, license_key: str, feature: str, user_id: str | None = None,
                    product: str | None = None, environment: str | None = None, quantity: int = 0,
                    request_id: str | None = None) -> Decision:
        """May this key (and user) use ``feature`` now? ``quantity > 0`` consumes metered usage."""
        doc = check_request(license_key, feature, user_id, product, environment, quantity, request_id)
        [decision] = await self._decide([doc], "/v1/check")
        return decision

    async def check_batch(self, checks: Iterable[Mapping[str, Any]]) -> list[Decision]:
        """Several checks (each a mapping of ``check``'s arguments), answered in order.

        Cached repeats are answered locally; the rest go in batches of up to 100 per request.
        """
        return await self._decide([check_request(**c) for c in checks], "/v1/check/batch")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> PortClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------------
    async def _decide(self, docs: list[dict[str, Any]], path: str) -> list[Decision]:
        now = time.monotonic()
        keys = [_cache_key(doc) for doc in docs]
        answers: list[Decision | None] = []
        for key in keys:
            hit = None if key is None else self.cache.get(key, now)
            answers.append(None if hit is None else replace(hit, cached=True))
        missing = [i for i, d in enumerate(answers) if d is None]
        for start in range(0, len(missing), MAX_BATCH):
            chunk = missing[start:start + MAX_BATCH]
            fresh = await self._ask([docs[i] for i in chunk], path)
            now = time.monotonic()
            for i, decision in zip(chunk, fresh):
                answers[i] = decision
                if keys[i] is not None:
                    self.cache.put(keys[i], decision, now)
        return answers  # type: ignore[return-value]  # every slot is filled above

    async def _ask(self, docs: list[dict[str, Any]], path: str) -> list[Decision]:
        """The port's decisions for ``docs`` (one request), or client-side ones if it is unreachable."""
        single = path == "/v1/check"
        payload = json.dumps(docs[0] if single else {"checks": docs}, separators=(",", ":")).encode()
        try:
            status, body = await self._post(path, payload, resend=all(not d.get("quantity") for d in docs))
            if single:
                return [Decision.from_answer(body, status)]
            results = body.get("results") if isinstance(body, dict) else None
            if results is None:  # the whole batch was refused (401, 429, ...): one answer for all
                return [Decision.from_answer(body, status)] * len(docs)
            if not isinstance(results, list) or len(results) != len(docs):
                raise ValueError("the batch answer does not match the request")
            return [Decision.from_answer(r, r.get("status", status) if isinstance(r, dict) else status)
                    for r in results]
        except (_Unreachable, ValueError) as exc:
            log.warning("port unreachable", extra={"event": "port_unreachable", "error": str(exc)})
            return [Decision.unreachable(d["feature"], f"port unreachable: {exc}",
                                         fail_open=any_match(self.fail_open_features, d["feature"]),
                                         request_id=d.get("request_id")) for d in docs]

    async def _post(self, path: str, payload: bytes, resend: bool) -> tuple[int, Any]:
        """POST with a fresh signature per attempt (a nonce is never reused), retrying as the
        module docstring says; raises _Unreachable when the port cannot be asked."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url, signed_path = self._url.with_path(self._prefix + path), self._prefix + path
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
            headers = {"Content-Type": "application/json"}
            if self._key_id is not None:
                headers |= signed_headers(self._key_id, self._secret or "", "POST", signed_path, payload, time.time())
            try:
                async with self._session.post(url, data=payload, headers=headers, ssl=self._ssl) as response:
                    try:
                        return response.status, await response.json(content_type=None)
                    except ValueError:
                        raise _Unreachable(f"HTTP {response.status} without a decision") from None
            except _NEVER_SENT as exc:
                why = f"cannot connect ({type(exc).__name__})"
            except _MAYBE_SENT as exc:
                why = f"no answer ({type(exc).__name__})"
                if not resend:
                    break
        raise _Unreachable(why)


class SyncPortClient:
    """Blocking client for plain Python: the async client running on a private loop thread.

    Same constructor arguments as :class:`PortClient`; use ``with SyncPortClient(...) as port:``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client = PortClient(*args, **kwargs)
        self._thread = LoopThread("portcullis-client")

    @property
    def cache(self) -> DecisionCache:
        return self._client.cache

    def check(self, **fields: Any) -> Decision:
        """Same arguments as :meth:`PortClient.check`."""
        return self._thread.run(self._client.check(**fields))

    def check_batch(self, checks: Iterable[Mapping[str, Any]]) -> list[Decision]:
        return self._thread.run(self._client.check_batch(list(checks)))

    def close(self) -> None:
        self._thread.run(self._client.close())
        self._thread.stop()

    def __enter__(self) -> SyncPortClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
