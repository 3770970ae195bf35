"""Typed application keys: the one place that names what lives on the aiohttp app."""
from __future__ import annotations

from aiohttp import web

from gateway.audit import AuditSink
from gateway.config import Settings
from gateway.http.gate import Gate
from gateway.http.upkeep import PolicyReloads
from gateway.metrics import Metrics
from gateway.port import Port
from gateway.tls import ServerTLS

SETTINGS = web.AppKey("settings", Settings)
PORT = web.AppKey("port", Port)
SINK = web.AppKey("sink", AuditSink)
GATE = web.AppKey("gate", Gate)
TLS = web.AppKey("tls", ServerTLS)
METRICS = web.AppKey("metrics", Metrics)
RELOADS = web.AppKey("reloads", PolicyReloads)
