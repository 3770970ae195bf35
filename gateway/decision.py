"""The caller's view of a check: the body it asks with, and the answer as one frozen value.

``PortClient`` (over HTTP) and ``Enforcer`` (in-process) both take the same arguments and return
this ``Decision``, so a service can switch between them without touching the code around them.
Importing this module costs only the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# Client-side reason: the port could not be asked (refused connection, timeout, no decision in
# the answer). Never produced by the port itself, so the audit trail never contains it.
PORT_UNREACHABLE = "PORT_UNREACHABLE"


def check_request(license_key: str, feature: str, user_id: str | None = None, product: str | None = None,
                  environment: str | None = None, quantity: int = 0, request_id: str | None = None) -> dict[str, Any]:
    """The JSON body of one check (SPEC §4), without the unset fields.

    A service that does not name ``product`` or ``environment`` gets the license's product and
    the port's own deployment environment.
    """
    doc = {"license_key": license_key, "feature": feature, "user_id": user_id, "product": product,
           "environment": environment, "quantity": quantity, "request_id": request_id}
    return {k: v for k, v in doc.items() if v is not None and (k != "quantity" or v)}


@dataclass(frozen=True, slots=True)
class LicenseInfo:
    id: str
    customer: str
    tier: str
    status: str
    expires_at: str | None = None
    days_left: int | None = None


@dataclass(frozen=True, slots=True)
class Seats:
    used: int | None
    limit: int | None


@dataclass(frozen=True, slots=True)
class QuotaInfo:
    used: int | None
    limit: int | None
    period_end: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer of the port. ``allowed`` is what a service acts on: allow and alert proceed.

    ``http_status`` is the status the port answered with (0 when the port was not reached);
    ``cached`` is True when a client served a repeat from its cache instead of asking again.
    """

    decision: str
    reason: str
    detail: str = ""
    decision_id: str | None = None
    request_id: str | None = None
    feature: str | None = None
    license: LicenseInfo | None = None
    alerts: tuple[str, ...] = ()
    seats: Seats | None = None
    quota: QuotaInfo | None = None
    policy_version: str = ""
    cache_ttl_s: int = 0
    http_status: int = 200
    cached: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision in ("allow", "alert")

    @classmethod
    def from_answer(cls, body: Mapping[str, Any], http_status: int = 200) -> Decision:
        """Build from a decision-shaped JSON answer; fields the client does not know are ignored.

        Raises ValueError when ``body`` is not decision-shaped (e.g. an HTML page from a proxy).
        """
        try:
            decision, reason = body["decision"], body["reason"]
        except (KeyError, TypeError):
            raise ValueError("the answer is not a decision") from None
        if decision not in ("allow", "deny", "alert") or not isinstance(reason, str):
            raise ValueError("the answer is not a decision")
        lic, seats, quota = body.get("license"), body.get("seats"), body.get("quota")
        try:
            return cls(
                decision=decision, reason=reason, detail=body.get("detail") or "",
                decision_id=body.get("decision_id"), request_id=body.get("request_id"), feature=body.get("feature"),
                license=LicenseInfo(**{k: lic.get(k) for k in LicenseInfo.__slots__}) if lic else None,
                alerts=tuple(body.get("alerts") or ()),
                seats=Seats(seats.get("used"), seats.get("limit")) if seats else None,
                quota=QuotaInfo(quota.get("used"), quota.get("limit"), quota.get("period_end")) if quota else None,
                policy_version=body.get("policy_version") or "", cache_ttl_s=int(body.get("cache_ttl_s") or 0),
                http_status=http_status,
            )
        except (AttributeError, TypeError):  # a nested field of the wrong type
            raise ValueError("the answer is not a decision") from None

    @classmethod
    def unreachable(cls, feature: str, detail: str, *, fail_open: bool, request_id: str | None = None) -> Decision:
        """The client's own answer when the port cannot be asked: deny, or an alert when the
        service opted this feature into failing open (it proceeds, and someone must look)."""
        if fail_open:
            return cls("alert", PORT_UNREACHABLE, f"{detail}; failing open for feature {feature!r}",
                       request_id=request_id, feature=feature, alerts=(PORT_UNREACHABLE,), http_status=0)
        return cls("deny", PORT_UNREACHABLE, f"{detail}; failing closed", request_id=request_id,
                   feature=feature, http_status=0)
