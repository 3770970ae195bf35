"""Request handlers: each one walks the gate's steps, asks the port, and lets the gate answer.

Handlers never build responses by hand: every answer, error or not, is an :class:`Exchange`
projected by ``Gate.finish``, so it has the decision shape and its audit record.
"""
from __future__ import annotations

import asyncio
import json
import logging
from contextlib import contextmanager
from typing import Iterator, NoReturn

from aiohttp import web

from gateway import admin
from gateway.checks import InvalidRequest, parse_batch
from gateway.config import Settings
from gateway.callers import Caller
from gateway.exchange import Exchange
from gateway.http.gate import Refused
from gateway.http.keys import GATE, METRICS, PORT, RELOADS, SETTINGS, SINK
from gateway.licenses import iso
from gateway.metrics import CONTENT_TYPE
from gateway.port import note_asked, read_check
from gateway.registry import LicenseConflict, RegistryUnavailable, open_store
from gateway.tls import transport
from gateway.types import Decision, License, Outcome, Reason, Status

log = logging.getLogger("portcullis.http")


def _failed(ex: Exchange, exc: Exception) -> None:
    """What an exception a handler did not expect becomes: the shared registry out of reach is an
    audited 503 deny the caller may retry (logged once per outage, by the registry's
    reachability), anything else a bug: an audited 500 deny, logged."""
    if isinstance(exc, RegistryUnavailable):
        ex.refuse(Reason.REGISTRY_UNAVAILABLE)
        return
    log.error("decision failed", exc_info=exc, extra={"event": "internal_error", "decision_id": ex.decision_id})
    ex.refuse(Reason.INTERNAL_ERROR)


@contextmanager
def deciding(ex: Exchange) -> Iterator[None]:
    """Run a handler's steps: a refusal ends them quietly, a failure becomes an audited deny."""
    try:
        yield
    except Refused:
        pass
    except Exception as exc:
        _failed(ex, exc)


async def check(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    ex = gate.open(request, "check")
    try:  # deciding(ex), without a generator context manager on the busiest endpoint
        raw, doc = await gate.read_json(request, ex)
        body = read_check(ex, doc)
        if body is None:
            raise Refused
        caller = await gate.authenticate(request, ex, raw)
        gate.throttle(ex, caller)
        await gate.port.check(ex, body, caller)
    except Refused:
        pass
    except Exception as exc:
        _failed(ex, exc)
    return await gate.finish([ex])


async def check_batch(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    head = gate.open(request, "batch")
    try:
        raw, doc = await gate.read_json(request, head)
        try:
            items = parse_batch(doc)
        except InvalidRequest as exc:
            head.refuse(Reason.INVALID_REQUEST, str(exc))
            raise Refused from None
        caller = await gate.authenticate(request, head, raw)
    except Refused:
        return await gate.finish([head])
    except Exception as exc:
        _failed(head, exc)
        return await gate.finish([head])
    exchanges = [head] + [gate.sibling(head) for _ in items[1:]]
    try:
        gate.throttle(head, caller, len(items))
    except Refused:  # the whole batch, one answer; each check refused has its own record
        for ex, item in zip(exchanges, items):
            note_asked(ex, item)
            ex.refuse(Reason.RATE_LIMITED, head.error)
        return await gate.finish(exchanges)
    asked = []
    for ex, item in zip(exchanges, items):
        try:  # what deciding() does, without a context manager per item
            body = read_check(ex, item)
        except Exception as exc:
            _failed(ex, exc)
            continue
        if body is not None:
            asked.append((ex, body))
    try:
        await gate.port.check_many(asked, caller)
    except Exception as exc:  # the registry's one transaction for them all failed: none of them is decided
        for ex, _ in asked:
            if ex.decision is None:
                _failed(ex, exc)
    results = [ex.answer(status=True) for ex in exchanges]
    return await gate.finish(exchanges, {"results": results}, 200)


def _state_answer(ex: Exchange, lic: License, detail: str) -> Exchange:
    ex.feature = None
    return ex.decide(lic, Decision(Outcome.ALLOW, Reason.VALID, detail, days_left=None))


def _license_extra(lic: License) -> dict:
    return {"license_state": {
        "id": lic.license_id, "customer": lic.customer, "product": lic.product, "tier": lic.tier,
        "status": lic.status.value, "features": list(lic.features), "seats": lic.seats,
        "starts_at": iso(lic.starts_at), "expires_at": iso(lic.expires_at), "environments": list(lic.environments),
    }}


async def get_license(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    ex = gate.open(request, "license.get")
    with deciding(ex):
        caller = await gate.authenticate(request, ex, b"")
        gate.throttle(ex, caller)
        lic = gate.port.index.by_id.get(request.match_info["license_id"])
        if lic is None:
            ex.refuse(Reason.KEY_NOT_FOUND, "no such license", status=404)
        elif caller.admin or (why := caller.refusal((lic.product,))) is None:
            _state_answer(ex, lic, "license state")
            ex.extra = _license_extra(lic)
        else:
            ex.refuse(Reason.CALLER_NOT_AUTHORIZED, why, about=lic)
    return await gate.finish([ex])


async def change_status(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    gate = request.app[GATE]
    ex = gate.open(request, f"admin.{action}")
    with deciding(ex):
        raw = await gate.read(request, ex, ("application/json", "text/plain", "application/octet-stream", ""))
        caller = await gate.authenticate(request, ex, raw)
        gate.require_admin(ex, caller)
        status = {"revoke": Status.REVOKED, "suspend": Status.SUSPENDED, "resume": Status.ACTIVE}[action]
        port = request.app[PORT]
        try:
            lic = await port.registry_call(port.store.set_status, request.match_info["license_id"], status)
        except LicenseConflict as exc:  # a revoked license stays revoked
            _conflict(ex, exc)
        if lic is None:
            ex.refuse(Reason.KEY_NOT_FOUND, "no such license", status=404)
        else:
            await port.follow()
            log.info("license status changed", extra={"event": f"license_{action}", "license_id": lic.license_id,
                                                       "caller_id": caller.caller_id})
            _state_answer(ex, lic, f"license is now {lic.status.value}")
            ex.extra = _license_extra(lic)
    return await gate.finish([ex])


def _conflict(ex: Exchange, exc: LicenseConflict) -> NoReturn:
    """A change the license's state forbids: 409 with its reason (admins may be told), and the
    record names the license someone tried to change."""
    ex.license = exc.license
    ex.refuse(Reason.INVALID_REQUEST, str(exc), status=409)
    raise Refused from None


_BUNDLE_TYPES = ("text/plain", "application/json")


def _bundle_text(ex: Exchange, raw: bytes, content_type: str) -> str:
    """The armored bundle of an import body: the text itself, or JSON ``{"bundle": "..."}``."""
    try:
        text = raw.decode("utf-8")
        if content_type == "application/json":
            doc = json.loads(text)
            if not isinstance(doc, dict) or set(doc) != {"bundle"} or not isinstance(doc["bundle"], str):
                ex.refuse(Reason.INVALID_REQUEST, 'body must be a JSON object with one string field, "bundle"')
                raise Refused
            text = doc["bundle"]
    except ValueError:  # bad UTF-8 or bad JSON
        ex.refuse(Reason.INVALID_REQUEST, "invalid license bundle")
        raise Refused from None
    return text


def _import_and_publish(settings: Settings, text: str) -> tuple[License, bool]:
    """Open, verify and store a bundle, then republish the analytics snapshots if it changed
    anything. Runs in a worker thread with its own registry connection (the event loop's one
    must never see a transaction from another thread)."""
    store = open_store(settings)
    try:
        lic, changed = admin.import_bundle(settings, store, text)
        if changed:
            try:
                admin.publish_snapshots(settings, store)
            except Exception:  # the import stands; the next change republishes
                log.exception("snapshot publication failed", extra={"event": "snapshot_failed"})
        return lic, changed
    finally:
        store.close()


async def admin_body(request: web.Request, ex: Exchange, content_types: tuple[str, ...]) -> tuple[bytes, Caller]:
    """The steps every admin request with a body takes first: read it, authenticate the caller,
    require an admin, take a token of its rate limit."""
    gate = request.app[GATE]
    raw = await gate.read(request, ex, content_types)
    caller = await gate.authenticate(request, ex, raw)
    gate.require_admin(ex, caller)
    gate.throttle(ex, caller)
    return raw, caller


async def import_license(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    ex = gate.open(request, "admin.import")
    with deciding(ex):
        raw, caller = await admin_body(request, ex, _BUNDLE_TYPES)
        text = _bundle_text(ex, raw, request.content_type)
        loop = asyncio.get_running_loop()
        try:
            lic, changed = await loop.run_in_executor(None, _import_and_publish, gate.port.settings, text)
        except admin.AdminError:
            ex.refuse(Reason.INVALID_REQUEST, "invalid license bundle")
            raise Refused from None
        except LicenseConflict as exc:  # genuine, but it would roll the license back or un-revoke it
            _conflict(ex, exc)
        await gate.port.follow()
        log.info("license imported", extra={"event": "license_import", "license_id": lic.license_id,
                                            "changed": changed, "caller_id": caller.caller_id})
        _state_answer(ex, lic, "license imported" if changed else "license already up to date")
        ex.extra = _license_extra(lic) | {"changed": changed}
    return await gate.finish([ex])


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 while this host can decide and record: "ready", or "degraded" when it answers from its
    own copy of the licenses ("cached" mode, the registry out of reach); else 503 "unavailable"."""
    port, sink, settings = request.app[PORT], request.app[SINK], request.app[SETTINGS]
    registry = port.registry
    checks = {"registry": registry.reachable, "policy": port.policy is not None, "audit": sink.healthy()}
    ready = checks["policy"] and checks["audit"] and (registry.reachable or registry.cached)
    status = "unavailable" if not ready else "ready" if registry.reachable else "degraded"
    return web.json_response({"status": status, "checks": checks,
                              "licenses": len(port.index), "policy_version": port.policy.version,
                              "transport": transport(settings.host, bool(settings.tls_cert))},
                             status=200 if ready else 503)


async def reload_policy(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    ex = gate.open(request, "admin.policy_reload")
    with deciding(ex):
        raw = await gate.read(request, ex, ("application/json", "text/plain", "application/octet-stream", ""))
        caller = await gate.authenticate(request, ex, raw)
        gate.require_admin(ex, caller)
        reloads = request.app[RELOADS]
        await reloads.callers.follow()  # changed callers too, now, whatever the policy's fate
        if not reloads.reload(ex):
            raise Refused
        await request.app[PORT].registry_call(reloads.announce)  # every other worker and host follows
    return await gate.finish([ex])
