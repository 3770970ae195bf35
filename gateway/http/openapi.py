"""The OpenAPI 3 document of the port, served at ``/openapi.json`` and kept true by a test."""
from __future__ import annotations

from aiohttp import web

from gateway.checks import MAX_BATCH
from gateway.types import Outcome, Reason

_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$"}
_OPTIONAL_NAME = {**_NAME, "type": ["string", "null"]}  # null: the same as leaving the field out

CHECK = {
    "type": "object", "additionalProperties": False, "required": ["license_key", "feature"],
    "properties": {
        "license_key": {"type": "string", "minLength": 1, "maxLength": 256},
        "feature": _NAME, "user_id": _OPTIONAL_NAME, "product": _OPTIONAL_NAME, "environment": _OPTIONAL_NAME,
        "request_id": _OPTIONAL_NAME,
        "quantity": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000, "default": 0},
    },
}
DECISION = {
    "type": "object",
    "required": ["decision", "reason", "detail", "decision_id", "request_id", "alerts", "policy_version",
                 "cache_ttl_s"],
    "properties": {
        "decision": {"type": "string", "enum": [o.value for o in Outcome]},
        "reason": {"type": "string", "enum": [r.value for r in Reason]},
        "detail": _STR, "decision_id": {"type": "string", "format": "uuid"}, "request_id": _STR,
        "feature": _NULLABLE_STR,
        "license": {"type": ["object", "null"], "properties": {
            "id": _STR, "customer": _STR, "tier": _STR, "status": _STR, "expires_at": _NULLABLE_STR,
            "days_left": {"type": ["integer", "null"]}}},
        "alerts": {"type": "array", "items": {"type": "string", "enum": [r.value for r in Reason]}},
        "seats": {"type": ["object", "null"], "properties": {
            "used": {"type": ["integer", "null"]}, "limit": {"type": ["integer", "null"]}}},
        "quota": {"type": ["object", "null"], "properties": {
            "used": {"type": "integer"}, "limit": {"type": "integer"}, "period_end": _NULLABLE_STR}},
        "policy_version": _STR, "cache_ttl_s": {"type": "integer"},
        "status": {"type": "integer", "description": "in batch results: the HTTP status the check had alone"},
        "changed": {"type": "boolean", "description": "in an import answer: whether the registry changed"},
        "license_state": {"type": "object"},
        "impact": {"type": "object", "description": "in a policy impact answer: the report of "
                                                    "`portcullis policy impact --format json`"},
    },
}
_HMAC_HEADERS = ["X-Port-Key-Id", "X-Port-Timestamp", "X-Port-Nonce", "X-Port-Signature"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _answers(*codes: int, ok: str = "Decision") -> dict:
    described = {200: "a decision", 400: "invalid request", 401: "not authenticated", 403: "caller not authorized",
                 404: "no such license", 408: "body not received in time", 409: "the license's state forbids it (an older bundle; a revoked license brought back)",
                 413: "body too large",
                 415: "wrong content type", 429: "rate limited",
                 500: "internal error (a deny)", 503: "audit unavailable (a deny)"}
    return {str(c): {"description": described[c], "content": {"application/json": {
        "schema": _ref(ok if c == 200 else "Decision")}}} for c in codes}


def _json_body(schema: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = (400, 401, 403, 408, 413, 415, 429, 500, 503)
_ADMIN_ID = [{"name": "license_id", "in": "path", "required": True, "schema": _STR}]

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Portcullis", "version": "1",
             "description": "Licensing enforcement gateway: allow, deny or alert for each feature activation."},
    "components": {
        "schemas": {
            "Check": CHECK, "Decision": DECISION,
            "Batch": {"type": "object", "additionalProperties": False, "required": ["checks"], "properties": {
                "checks": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": _ref("Check"),
                           "description": "each check is answered on its own: a malformed one gets status 400 "
                                          "in its result, the others are decided"}}},
            "Import": {"type": "object", "additionalProperties": False, "required": ["bundle"], "properties": {
                "bundle": {"type": "string", "description": "a sealed bundle in its text form"}}},
            "BatchResults": {"type": "object", "required": ["results"], "properties": {
                "results": {"type": "array", "items": _ref("Decision")}}},
        },
        "securitySchemes": {h: {"type": "apiKey", "in": "header", "name": h} for h in _HMAC_HEADERS},
    },
    "security": [{h: [] for h in _HMAC_HEADERS}],
    "paths": {
        "/v1/check": {"post": {"operationId": "check", "summary": "Decide one feature activation",
                               "requestBody": _json_body("Check"), "responses": _answers(200, *_ERRORS)}},
        "/v1/check/batch": {"post": {"operationId": "checkBatch", "summary": f"Decide up to {MAX_BATCH} checks",
                                     "requestBody": _json_body("Batch"),
                                     "responses": _answers(200, *_ERRORS, ok="BatchResults")}},
        "/v1/licenses/{license_id}": {"get": {"operationId": "getLicense", "summary": "A license's public state",
                                              "parameters": _ADMIN_ID,
                                              "responses": _answers(200, 401, 403, 404, 429, 503)}},
        "/v1/admin/licenses": {"post": {
            "operationId": "importLicense", "summary": "Import a sealed license bundle (admin)",
            "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}},
                                                          "application/json": {"schema": _ref("Import")}}},
            "responses": _answers(200, 409, *_ERRORS)}},
        **{f"/v1/admin/licenses/{{license_id}}/{action}": {"post": {
            "operationId": f"{action}License", "summary": f"{action.capitalize()} a license (admin)",
            "parameters": _ADMIN_ID, "responses": _answers(200, 401, 403, 404, 408, 409, 413, 415, 503)}}
           for action in ("revoke", "suspend", "resume")},
        "/v1/admin/policy/reload": {"post": {"operationId": "reloadPolicy", "summary": "Reload policy.toml (admin)",
                                             "responses": _answers(200, 400, 401, 403, 408, 413, 415, 503)}},
        "/v1/admin/policy/impact": {"post": {
            "operationId": "policyImpact",
            "summary": "Replay the recorded checks under a proposed policy; report every decision that would "
                       "change (admin)",
            "parameters": [{"name": "days", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 30}}],
            "requestBody": {"required": True, "content": {t: {"schema": {"type": "string"}} for t in (
                "application/toml", "text/plain", "application/octet-stream")}},
            "responses": _answers(200, *_ERRORS)}},
        "/healthz": {"get": {"operationId": "healthz", "security": [], "summary": "Process is alive",
                             "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"operationId": "readyz", "security": [], "summary": "Ready to decide",
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"operationId": "metrics", "security": [], "summary": "Prometheus metrics of all workers",
                             "responses": {"200": {"description": "Prometheus text exposition format",
                                                   "content": {"text/plain": {"schema": _STR}}}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "security": [], "summary": "This document",
                                  "responses": {"200": {"description": "OpenAPI document"}}}},
    },
}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
