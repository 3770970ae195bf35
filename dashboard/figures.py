"""Plotly figure builders: pure functions from a report's DataFrame to a Figure.

They neither query nor touch Streamlit, so they are tested without a server and every page draws
the same thing the same way. Each outcome has one colour everywhere (allow green, alert amber,
deny red), and severities reuse them, so red always means "refused or over the limit". A frame
with no rows gives a figure that says so, never empty axes or an exception.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

OUTCOMES = ("allow", "alert", "deny")
OUTCOME_COLOURS = {"allow": "#2e7d32", "alert": "#f9a825", "deny": "#c62828"}
PERCENTILE_COLOURS = {"p50": "#1565c0", "p95": "#6a1b9a", "p99": "#c62828"}
# Categorical palette for things that are not outcomes (reasons, auth errors).
PALETTE = ("#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#5d4037", "#ad1457", "#558b2f", "#455a64")
# Key states (stale-keys report) by severity: unused keys want attention, zombies are refused.
KEY_KIND_COLOURS = {"never_used": OUTCOME_COLOURS["alert"], "stale": OUTCOME_COLOURS["alert"],
                    "expired": OUTCOME_COLOURS["deny"], "revoked": OUTCOME_COLOURS["deny"],
                    "unknown": OUTCOME_COLOURS["deny"]}
ZOMBIE_KINDS = ("revoked", "expired", "unknown")
# The reasons of 401, 403 and 429 answers (SPEC §4): what "unauthorized" means over time.
REFUSAL_REASONS = ("UNAUTHENTICATED", "CALLER_NOT_AUTHORIZED", "RATE_LIMITED")
NO_DATA = "No data in this time range"

_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.15, traceorder="normal"))
_TIME = dict(_LAYOUT, hovermode="x unified")


def empty(title: str, message: str = NO_DATA) -> go.Figure:
    """A blank figure carrying a message: what every builder returns for a frame without rows."""
    fig = go.Figure(layout=dict(title=title, margin=_LAYOUT["margin"]))
    fig.add_annotation(text=message, showarrow=False, font=dict(size=16, color="#757575"),
                       xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    return fig.update_yaxes(visible=False)


def utilisation_colour(pct: float) -> str:
    """Green below 80 % of a limit, amber from 80 %, red once over it."""
    if pct > 100:
        return OUTCOME_COLOURS["deny"]
    return OUTCOME_COLOURS["alert"] if pct >= 80 else OUTCOME_COLOURS["allow"]


def expiry_colour(days_left: int) -> str:
    """Red within a week of expiry, amber within a month, green beyond."""
    if days_left <= 7:
        return OUTCOME_COLOURS["deny"]
    return OUTCOME_COLOURS["alert"] if days_left <= 30 else OUTCOME_COLOURS["allow"]


def decisions_over_time(trends: pd.DataFrame, bucket: str = "hour", now: pd.Timestamp | None = None) -> go.Figure:
    """Stacked bars of decisions per ``bucket`` (hour or day), one trace per outcome (``trends``
    report); the bucket still filling at ``now`` (default: the current time) is drawn faded and
    marked, so it does not read as a drop.

    All three outcomes are always present, so the legend and colours never shift between ranges.
    """
    title = "Decisions over time"
    if trends.empty:
        return empty(title)
    per = trends.groupby(["bucket", "decision"], as_index=False)["calls"].sum()
    partial = _partial_from(per["bucket"], bucket, now)
    fig = go.Figure(layout=dict(title=title, barmode="stack", yaxis_title="decisions", **_TIME))
    for outcome in OUTCOMES:
        rows = per[per["decision"] == outcome]
        fig.add_bar(name=outcome, x=rows["bucket"], y=rows["calls"], width=0.9 * _ms(bucket),
                    marker=dict(color=OUTCOME_COLOURS[outcome], opacity=[0.4 if b >= partial else 1
                                                                         for b in pd.to_datetime(rows["bucket"])]))
    return _time_axis(fig, per["bucket"], bucket, partial)


def latency_percentiles(latency: pd.DataFrame, bucket: str = "hour", now: pd.Timestamp | None = None) -> go.Figure:
    """p50/p95/p99 decision latency per bucket in milliseconds (``latency`` report), with markers
    so that a single bucket still shows."""
    title = "Decision latency"
    if latency.empty:
        return empty(title)
    fig = go.Figure(layout=dict(title=title, yaxis_title="ms", **_TIME))
    for name, colour in PERCENTILE_COLOURS.items():
        fig.add_scatter(name=name, x=latency["bucket"], y=latency[f"{name}_us"] / 1000, mode="lines+markers",
                        line=dict(color=colour))
    return _time_axis(fig, latency["bucket"], bucket, _partial_from(latency["bucket"], bucket, now))


STEPS = {"hour": pd.Timedelta(hours=1), "day": pd.Timedelta(days=1)}


def _ms(bucket: str) -> float:
    """A bucket's length in milliseconds, the unit of widths on a date axis."""
    return STEPS[bucket] / pd.Timedelta(milliseconds=1)


def _partial_from(buckets: pd.Series, bucket: str, now: pd.Timestamp | None) -> pd.Timestamp:
    """The start of the bucket still filling at ``now``: later than every bucket if none is."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    newest = pd.to_datetime(buckets).max()
    return newest if newest + STEPS[bucket] > now else newest + STEPS[bucket]


def _time_axis(fig: go.Figure, buckets: pd.Series, bucket: str, partial: pd.Timestamp) -> go.Figure:
    """A date axis from a bucket before the first to a bucket after the last, so one bucket still
    reads as an hour or a day (Plotly would zoom a single point to fractions of a millisecond), and
    the partial bucket shaded and labelled."""
    times = pd.to_datetime(buckets)
    step = STEPS[bucket]
    fig.update_xaxes(type="date", range=[times.min() - step, times.max() + step])
    if partial <= times.max():
        fig.add_vrect(x0=partial - step / 2, x1=partial + step / 2, fillcolor="#9e9e9e", opacity=0.15, line_width=0,
                      annotation_text=f"this {bucket} so far", annotation_position="top right")
    return fig


def refusals_over_time(trends: pd.DataFrame) -> go.Figure:
    """401/403/429 answers per bucket, stacked by reason (``trends`` report)."""
    title = "Unauthorized requests over time"
    refused = trends[trends["reason"].isin(REFUSAL_REASONS)] if not trends.empty else trends
    if refused.empty:
        return empty(title, "No refused requests in this time range")
    per = refused.groupby(["bucket", "reason"], as_index=False)["calls"].sum()
    fig = go.Figure(layout=dict(title=title, barmode="stack", yaxis_title="requests", **_TIME))
    for reason, colour in zip(REFUSAL_REASONS, PALETTE):
        rows = per[per["reason"] == reason]
        if not rows.empty:
            fig.add_bar(name=reason, x=rows["bucket"], y=rows["calls"], marker_color=colour)
    return fig


def top_offenders(unauthorized: pd.DataFrame, top: int = 15) -> go.Figure:
    """The sources with the most refused requests (``unauthorized`` report): a caller when it
    authenticated, else the remote address. Stacked by reason."""
    title = "Top offenders"
    refused = unauthorized[unauthorized["kind"] == "refused"] if not unauthorized.empty else unauthorized
    if refused.empty:
        return empty(title, "No refused requests in this time range")
    source = refused["caller_id"].fillna("unauthenticated @ " + refused["remote_addr"])
    per = refused.assign(source=source).groupby(["source", "reason"], as_index=False)["calls"].sum()
    order = per.groupby("source")["calls"].sum().nlargest(top).index
    per = per[per["source"].isin(order)]
    fig = go.Figure(layout=dict(title=title, barmode="stack", xaxis_title="refused requests", **_LAYOUT))
    for reason, colour in zip(REFUSAL_REASONS, PALETTE):
        rows = per[per["reason"] == reason]
        if not rows.empty:
            fig.add_bar(name=reason, x=rows["calls"], y=rows["source"], orientation="h", marker_color=colour)
    return fig.update_yaxes(categoryorder="array", categoryarray=order.tolist()[::-1])


def auth_errors(unauthorized: pd.DataFrame) -> go.Figure:
    """Authentication failures by ``auth_error`` (``unauthorized`` report), the commonest first."""
    title = "Authentication errors"
    failed = unauthorized.dropna(subset=["auth_error"]) if not unauthorized.empty else unauthorized
    if failed.empty:
        return empty(title, "No authentication failures in this time range")
    per = failed.groupby("auth_error")["calls"].sum().sort_values(ascending=False)
    fig = go.Figure(layout=dict(title=title, yaxis_title="requests", **_LAYOUT))
    fig.add_bar(name="auth errors", x=per.index, y=per.values, marker_color=OUTCOME_COLOURS["deny"])
    return fig


def keys_by_kind(keys: pd.DataFrame) -> go.Figure:
    """How many keys are stale, never used, or zombies by kind (``stale-keys`` report)."""
    title = "Keys by kind"
    if keys.empty:
        return empty(title, "No stale or zombie keys")
    counts = keys["kind"].value_counts().reindex(list(KEY_KIND_COLOURS)).dropna()
    fig = go.Figure(layout=dict(title=title, yaxis_title="keys", **_LAYOUT))
    fig.add_bar(name="keys", x=counts.index, y=counts.values,
                marker_color=[KEY_KIND_COLOURS[k] for k in counts.index])
    return fig


def zombie_keys(keys: pd.DataFrame, top: int = 15) -> go.Figure:
    """Revoked, expired and unknown keys still presented, the most presented on top
    (``stale-keys`` report). All are refused, so all are red; the label says which kind."""
    title = "Zombie keys still presented"
    zombies = keys[keys["kind"].isin(ZOMBIE_KINDS)] if not keys.empty else keys
    if zombies.empty:
        return empty(title, "No zombie keys presented")
    rows = zombies.nlargest(top, "presented")
    label = rows["kind"] + " · " + rows["key_fp"] + " · " + rows["customer"].fillna("no license")
    fig = go.Figure(layout=dict(title=title, xaxis_title="times presented", showlegend=False, **_LAYOUT))
    fig.add_bar(name="zombie keys", x=rows["presented"], y=label, orientation="h", marker_color=OUTCOME_COLOURS["deny"])
    return fig.update_yaxes(autorange="reversed")


def utilisation(df: pd.DataFrame, title: str, label: list[str], top: int = 20) -> go.Figure:
    """``utilisation_pct`` per row (``seats`` or ``quota`` report), the fullest on top, labelled by
    the ``label`` columns and coloured by :func:`utilisation_colour`; 100 % is marked."""
    if df.empty:
        return empty(title, "No license with a limit in use in this time range")
    rows = df.nlargest(top, "utilisation_pct")
    names = rows[label].astype(str).agg(" · ".join, axis=1)
    fig = go.Figure(layout=dict(title=title, xaxis_title="% of limit", **_LAYOUT))
    fig.add_bar(name="utilisation", x=rows["utilisation_pct"], y=names, orientation="h",
                marker_color=[utilisation_colour(p) for p in rows["utilisation_pct"]])
    fig.add_vline(x=100, line_dash="dot", line_color=OUTCOME_COLOURS["deny"])
    return fig.update_yaxes(categoryorder="array", categoryarray=names.tolist()[::-1])


def quota_at_risk(forecast: pd.DataFrame, now: pd.Timestamp | None = None, top: int = 20) -> go.Figure:
    """The metered quotas at risk (``quota-forecast`` report): those projected to run out before
    their period ends, or already past 80 % of the limit. A bar for what is used now and a dot
    for where the current burn puts it at the period's end; red when that is over the limit. A
    quota comfortably below its limit is not drawn: the table lists every one."""
    title = "Quotas at risk"
    risky = forecast[forecast["runs_out"] | (forecast["used_pct"] >= 80)] if not forecast.empty else forecast
    if risky.empty:
        return empty(title, "No quota is projected to run out before its period ends")
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    rows = risky.head(top)
    left_days = (pd.to_datetime(rows["period_end"]) - now).dt.total_seconds().clip(lower=0) / 86400
    projected = rows["used_pct"] + 100 * rows["burn_per_day"].fillna(0) * left_days / rows["quota_limit"]
    names = (rows["customer"].fillna("?") + " · " + rows["license_id"] + " · " + rows["feature"]
             + " (" + rows["period"] + ")")
    fig = go.Figure(layout=dict(title=title, height=_rows_height(len(rows)), **_LAYOUT))
    fig.update_xaxes(ticksuffix=" %")  # the unit on the ticks: an axis title would sit under the legend
    fig.add_bar(name="used so far", x=rows["used_pct"], y=names, orientation="h",
                marker_color=[utilisation_colour(p) for p in rows["used_pct"]])
    fig.add_scatter(name="at period end", x=projected, y=names, mode="markers",
                    marker=dict(symbol="line-ns-open", size=18, line_width=3,
                                color=[OUTCOME_COLOURS["deny"] if p > 100 else "#424242" for p in projected]))
    fig.add_vline(x=100, line_dash="dot", line_color=OUTCOME_COLOURS["deny"])
    return fig.update_yaxes(categoryorder="array", categoryarray=names.tolist()[::-1])


def expiry_timeline(expiring: pd.DataFrame) -> go.Figure:
    """Licenses by expiry date (``expiring`` report), coloured by :func:`expiry_colour`; marker size grows with the calls of the last 7 days, so the licenses still in
    heavy use stand out."""
    title = "Expiry timeline"
    if expiring.empty:
        return empty(title, "No license expires in this window")
    colours = [expiry_colour(d) for d in expiring["days_left"]]
    size = 8 + 22 * (expiring["calls_7d"] / max(1, expiring["calls_7d"].max())) ** 0.5
    label = expiring["customer"] + " · " + expiring["license_id"]
    when = pd.to_datetime(expiring["expires_at"])
    fig = go.Figure(layout=dict(title=title, xaxis_title="expires", height=_rows_height(len(expiring)), **_LAYOUT))
    fig.add_scatter(name="expiring", x=expiring["expires_at"], y=label, mode="markers",
                    marker=dict(color=colours, size=size, symbol="diamond"),
                    customdata=expiring[["days_left", "calls_7d"]],
                    hovertemplate="%{y}<br>%{x}<br>%{customdata[0]} days left, %{customdata[1]} calls in 7 days")
    # Days either side, so one license (or several on one day) still gets an axis of dates.
    fig.update_xaxes(type="date", range=[when.min() - pd.Timedelta(days=3), when.max() + pd.Timedelta(days=3)])
    return fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=label, ticktext=label)


def _rows_height(rows: int) -> int:
    """A chart tall enough for one labelled row per entry (Plotly drops labels that do not fit)."""
    return max(300, 140 + 24 * rows)


def _outcome_of(label: str) -> str:
    """The outcome of a ``decision/REASON`` label (policy impact reports)."""
    return label.split("/", 1)[0]


def impact_over_time(by_day: pd.DataFrame) -> go.Figure:
    """Changed decisions per day under a proposed policy, stacked by what they would become
    (``decision/REASON``), coloured by that outcome."""
    title = "Changed decisions over time"
    if by_day.empty:
        return empty(title, "No decision would change")
    fig = go.Figure(layout=dict(title=title, barmode="stack", yaxis_title="decisions", **_TIME))
    for label, rows in by_day.groupby("after", sort=True):
        fig.add_bar(name=f"→ {label}", x=rows["day"], y=rows["records"],
                    marker_color=OUTCOME_COLOURS.get(_outcome_of(label), PALETTE[0]))
    return fig


def impact_by_customer(by_customer: pd.DataFrame, top: int = 20) -> go.Figure:
    """Changed decisions per customer (the most affected on top), stacked by what they would
    become, coloured by that outcome."""
    title = "Changed decisions by customer"
    if by_customer.empty:
        return empty(title, "No decision would change")
    totals = by_customer.groupby("customer")["records"].sum().nlargest(top)
    rows = by_customer[by_customer["customer"].isin(totals.index)]
    fig = go.Figure(layout=dict(title=title, barmode="stack", xaxis_title="decisions", **_LAYOUT))
    for label, part in rows.groupby("after", sort=True):
        per = part.groupby("customer")["records"].sum()
        fig.add_bar(name=f"→ {label}", x=per.values, y=per.index, orientation="h",
                    marker_color=OUTCOME_COLOURS.get(_outcome_of(label), PALETTE[0]))
    return fig.update_yaxes(categoryorder="array", categoryarray=totals.index.tolist()[::-1])


def seats_over_time(activity: pd.DataFrame, bucket: str = "hour", now: pd.Timestamp | None = None) -> go.Figure:
    """Seats held per license over time against its limit (``customer-activity`` report): a line
    per seat-limited license and its limit dotted in the same colour."""
    title = "Seats used"
    limited = activity[activity["seats_limit"] > 0] if not activity.empty else activity
    if limited.empty:
        return empty(title, "No seat-limited license in use in this time range")
    per = limited.groupby(["license_id", "bucket"], as_index=False)[["seats_used", "seats_limit"]].max()
    fig = go.Figure(layout=dict(title=title, yaxis_title="seats", **_TIME))
    for (license_id, rows), colour in zip(per.groupby("license_id"), _cycle()):
        fig.add_scatter(name=license_id, x=rows["bucket"], y=rows["seats_used"], mode="lines+markers",
                        line=dict(color=colour))
        fig.add_scatter(name=f"{license_id} limit", x=rows["bucket"], y=rows["seats_limit"], mode="lines",
                        line=dict(color=colour, dash="dot"), showlegend=False)
    fig.update_yaxes(rangemode="tozero")
    return _time_axis(fig, per["bucket"], bucket, _partial_from(per["bucket"], bucket, now))


def quota_burn(activity: pd.DataFrame, forecast: pd.DataFrame, bucket: str = "hour",
               now: pd.Timestamp | None = None) -> go.Figure:
    """Each metered quota's units used over time as a share of its limit (``customer-activity``),
    and, from ``forecast`` (``quota-forecast`` rows of the same licenses), a dashed projection at
    the current burn to the end of the period: red when it crosses the limit before then."""
    title = "Quota burn"
    metered = activity[activity["quota_limit"] > 0] if not activity.empty else activity
    if metered.empty:
        return empty(title, "No metered quota in use in this time range")
    per = metered.groupby(["license_id", "feature", "bucket"], as_index=False)[["quota_used", "quota_limit"]].max()
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    fig = go.Figure(layout=dict(title=title, yaxis_title="% of limit", **_TIME))
    ends = [per["bucket"].max()]
    for ((license_id, feature), rows), colour in zip(per.groupby(["license_id", "feature"]), _cycle()):
        name = f"{license_id} · {feature}"
        fig.add_scatter(name=name, x=rows["bucket"], y=100 * rows["quota_used"] / rows["quota_limit"],
                        mode="lines+markers", line=dict(color=colour))
        ahead = forecast[(forecast["license_id"] == license_id) & (forecast["feature"] == feature)]
        for row in ahead.itertuples():
            end = pd.Timestamp(row.period_end)
            left = max(0.0, (end - now).total_seconds() / 86400)
            at_end = row.used_pct + 100 * (row.burn_per_day or 0) * left / row.quota_limit
            fig.add_scatter(name=f"{name} projected", x=[now, end], y=[row.used_pct, at_end], mode="lines",
                            line=dict(color=OUTCOME_COLOURS["deny"] if row.runs_out else colour, dash="dash"))
            ends.append(end)
    fig.add_hline(y=100, line_dash="dot", line_color=OUTCOME_COLOURS["deny"])
    fig.update_yaxes(rangemode="tozero")
    _time_axis(fig, per["bucket"], bucket, _partial_from(per["bucket"], bucket, now))
    return fig.update_xaxes(range=[pd.to_datetime(per["bucket"]).min() - STEPS[bucket], max(ends) + STEPS[bucket]])


def reasons_by_outcome(activity: pd.DataFrame) -> go.Figure:
    """Decisions by reason, each bar in its outcome's colour, the commonest first
    (``customer-activity`` or ``trends``)."""
    title = "Decisions by reason"
    if activity.empty:
        return empty(title)
    per = activity.groupby(["reason", "decision"], as_index=False)["calls"].sum()
    order = per.groupby("reason")["calls"].sum().sort_values(ascending=False).index
    fig = go.Figure(layout=dict(title=title, height=_rows_height(len(order)), **_LAYOUT))
    return _outcome_bars(fig, per, "reason", order)


def callers_and_environments(activity: pd.DataFrame, top: int = 15) -> go.Figure:
    """Who uses it: decisions per caller and environment, stacked by outcome, the busiest on top
    (``customer-activity``)."""
    title = "Callers and environments"
    if activity.empty:
        return empty(title)
    source = activity["caller_id"].fillna("unauthenticated") + " · " + activity["environment"].fillna("?")
    per = activity.assign(source=source).groupby(["source", "decision"], as_index=False)["calls"].sum()
    order = per.groupby("source")["calls"].sum().nlargest(top).index
    per = per[per["source"].isin(order)]
    fig = go.Figure(layout=dict(title=title, height=_rows_height(len(order)), **_LAYOUT))
    return _outcome_bars(fig, per, "source", order)


def _outcome_bars(fig: go.Figure, per: pd.DataFrame, label: str, order: pd.Index) -> go.Figure:
    """Horizontal bars of ``calls`` per ``label``, stacked by outcome in its colour, ``order`` top down
    (no axis title: the chart's says what is counted, and the legend sits where it would be)."""
    fig.update_layout(barmode="stack")
    for outcome in OUTCOMES:
        rows = per[per["decision"] == outcome]
        fig.add_bar(name=outcome, x=rows["calls"], y=rows[label], orientation="h", marker_color=OUTCOME_COLOURS[outcome])
    return fig.update_yaxes(categoryorder="array", categoryarray=order.tolist()[::-1])


def _cycle():
    """The categorical palette, round and round: one colour per license or quota."""
    while True:
        yield from PALETTE
