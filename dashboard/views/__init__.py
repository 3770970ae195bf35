"""The dashboard's pages, one layout module each, in sidebar order.

A page is a function ``render(root, window)`` that lays out reports for the data directory
``root`` and the selected :class:`~dashboard.data.TimeRange`. ``live`` pages re-render on the
auto-refresh timer; the explorer does not, so nobody's half-typed query is re-run under them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dashboard.data import TimeRange
from dashboard.views import explorer, keys, licenses, overview, security


@dataclass(frozen=True)
class Page:
    slug: str  # in the URL: ?page=<slug>
    title: str
    render: Callable[[str, TimeRange], None]
    live: bool = True


PAGES: dict[str, Page] = {p.slug: p for p in (
    Page("overview", "Overview", overview.render),
    Page("licenses", "Licenses", licenses.render),
    Page("keys", "Keys", keys.render),
    Page("security", "Security", security.render),
    Page("explorer", "Audit explorer", explorer.render, live=False),
)}
