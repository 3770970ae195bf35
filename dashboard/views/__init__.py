"""The dashboard's pages, one module each, in navigation order.

Each page is a file that ``st.navigation`` runs (``views/<slug>.py``, at ``/<slug>``): the module
defines ``render(root, window)``, which lays out reports for the data directory ``root`` and the
selected :class:`~dashboard.data.TimeRange`, and when run as the page hands it to
``layout.show``. ``live`` pages re-render on the auto-refresh timer; the explorer does not, so
nobody's half-typed query is re-run under them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    slug: str  # the page's path: /<slug>
    title: str
    icon: str
    live: bool = True

    @property
    def path(self) -> str:
        """The page's script, relative to ``dashboard/app.py``."""
        return f"views/{self.slug}.py"


PAGES: dict[str, Page] = {p.slug: p for p in (
    Page("overview", "Overview", ":material/dashboard:"),
    Page("customers", "Customers", ":material/business:"),
    Page("licenses", "Licenses", ":material/license:"),
    Page("keys", "Keys", ":material/key:"),
    Page("security", "Security", ":material/shield:"),
    Page("explorer", "Audit explorer", ":material/manage_search:", live=False),
)}
DEFAULT_PAGE = "overview"
