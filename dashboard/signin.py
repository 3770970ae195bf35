"""Who is looking: the first thing the app script does, before any page draws a number.

- ``oidc``: Streamlit's own sign-in (``st.login`` / ``st.user`` / ``st.logout``, Authlib
  underneath) against the OpenID provider that ``portcullis dashboard`` configured.
- ``proxy``: an authenticating proxy in front sets a header naming the user
  (``dashboard_proxy_user_header``); ``dashboard.gate`` lets only the proxy connect, so nobody
  else can send it.
- ``none``: no sign-in; ``portcullis dashboard`` then serves loopback only unless told otherwise.

A visitor who is not signed in gets the sign-in button (or, behind a proxy, an explanation) and
the script stops there: no sidebar, no query, no data reaches the browser.
"""
from __future__ import annotations

import streamlit as st

from gateway.config import Settings


def visitor(settings: Settings) -> str | None:
    """The signed-in visitor's name (None without sign-in), or stop the script at the sign-in page."""
    if settings.dashboard_auth == "oidc":
        if not st.user.is_logged_in:
            _stop("Sign in to see the dashboard.", button=True)
        return str(st.user.get("email") or st.user.get("name") or st.user.get("sub") or "signed in")
    if settings.dashboard_auth == "proxy":
        name = st.context.headers.get(settings.dashboard_proxy_user_header, "").strip()
        if not name:
            _stop(f"No signed-in user: this dashboard is served behind an authenticating proxy, which "
                  f"names the user in the `{settings.dashboard_proxy_user_header}` header. Open it through that proxy.")
        return name
    return None


def sidebar(settings: Settings, name: str | None) -> None:
    """Who is signed in, and (with OIDC) the way out."""
    if name is None:
        return
    st.caption(f"Signed in as **{name}**")
    if settings.dashboard_auth == "oidc":
        st.button("Sign out", on_click=st.logout, icon=":material/logout:")


def _stop(message: str, button: bool = False) -> None:
    st.title("Portcullis")
    st.write(message)
    if button:
        st.button("Sign in", on_click=st.login, type="primary", icon=":material/login:")
    st.stop()
