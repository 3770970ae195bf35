"""What the Overview's attention list counts as trouble, from report frames shaped as the reports
return them: each kind is named with its page, the refusing first, and a healthy deployment gets
no item at all."""
from __future__ import annotations

import pandas as pd

from dashboard import attention


def frames(**rows) -> dict[str, pd.DataFrame]:
    """One frame per report the list reads, empty unless ``rows`` gives some."""
    columns = {
        "expiring": ["license_id", "customer", "days_left", "calls_7d"],
        "quota": ["license_id", "customer", "feature", "used_pct", "runs_out"],
        "seats": ["license_id", "customer", "seats_used", "seats_limit", "seat_denials"],
        "keys": ["kind", "key_fp", "presented"],
        "unauthorized": ["kind", "caller_id", "remote_addr", "distinct_keys"],
        "jumps": ["kind", "source", "deny_pct", "previous_deny_pct"],
        "anomalies": ["kind", "customer", "key_fp", "caller_id", "network", "calls_per_day", "usual_daily"],
    }
    return {name: pd.DataFrame(rows.get(name, []), columns=cols) for name, cols in columns.items()}


def test_nothing_wrong_gives_no_item():
    healthy = frames(expiring=[("l1", "acme", 20, 0)],  # expiring, but nobody uses it
                     quota=[("l2", "hooli", "export", 40.0, False)],
                     seats=[("l3", "wayne", 4, 5, 0)],
                     keys=[("stale", "aa", None), ("never_used", "bb", None)],
                     unauthorized=[("refused", "web", "10.0.0.1", None)])
    assert attention.items(**healthy, warn_days=30) == []


def test_each_kind_of_trouble_is_named_with_its_page_the_refusing_first():
    found = attention.items(**frames(
        expiring=[("l1", "acme", 5, 12)],
        quota=[("l2", "hooli", "export", 90.0, True), ("l9", "calm", "export", 10.0, False)],
        seats=[("l3", "wayne", 6, 5, 0), ("l4", "full", 5, 5, 3), ("l5", "fine", 4, 5, 0)],
        keys=[("revoked", "aa", 4.0), ("unknown", "bb", 9.0), ("stale", "cc", None)],
        unauthorized=[("key_probing", None, "203.0.113.7", 40.0), ("refused", "web", "10.0.0.1", None)],
        jumps=[("caller", "batch", 60.0, 2.0)],
        anomalies=[("new_caller", "acme", "k1", "stranger", None, None, None),
                   ("new_network", "acme", "k1", None, "198.51.100.0/24", None, None),
                   ("volume", "hooli", "k2", None, None, 600.0, 20.0)],
    ), warn_days=30)
    assert [(i.page, i.severity) for i in found] == [
        ("licenses", "deny"), ("licenses", "deny"), ("keys", "deny"), ("security", "deny"), ("security", "deny"),
        ("keys", "alert"), ("licenses", "alert")]
    quota, seats, keys, probing, jumps, anomalies, expiring = found
    assert quota.headline == "1 quota projected to run out before its period ends"
    assert quota.detail == "hooli · l2 · export (90 % used)"
    assert seats.headline.startswith("2 licenses full or over") and "wayne · l3 (6/5 seats)" in seats.detail
    assert keys.detail == "bb (unknown, presented 9×), aa (revoked, presented 4×)"  # the most presented first
    assert probing.detail == "unauthenticated @ 203.0.113.7 (40 unknown keys)"
    assert jumps.detail == "caller batch (2 % → 60 %)"
    assert anomalies.headline == "2 keys used in a new way (a leak?)"  # one item per key
    assert anomalies.detail == "acme · k1 (new caller stranger), hooli · k2 (600 calls a day, usually 20)"
    assert expiring.headline == "1 license in active use expiring within 30 days"


def test_a_long_list_names_the_first_few_and_counts_the_rest():
    many = frames(seats=[(f"l{i}", f"c{i}", 9, 5, 1) for i in range(10)])
    (item,) = attention.items(**many, warn_days=30)
    assert len(item.examples) == attention.EXAMPLES and item.detail.endswith(f"and {10 - attention.EXAMPLES} more")
