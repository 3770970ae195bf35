"""The Impact view's figures: changed decisions stacked by what they become, in outcome colours."""
from __future__ import annotations

import pandas as pd

from dashboard import figures


def test_impact_over_time_stacks_by_new_decision_in_its_outcome_colour():
    by_day = pd.DataFrame([("2026-06-12", "deny/FEATURE_NOT_ENTITLED", 2), ("2026-06-13", "alert/QUOTA_NEAR_LIMIT", 1),
                           ("2026-06-13", "deny/FEATURE_NOT_ENTITLED", 1)], columns=["day", "after", "records"])
    fig = figures.impact_over_time(by_day)
    traces = {t.name: (list(t.x), list(t.y), t.marker.color) for t in fig.data}
    assert traces == {
        "→ alert/QUOTA_NEAR_LIMIT": (["2026-06-13"], [1], figures.OUTCOME_COLOURS["alert"]),
        "→ deny/FEATURE_NOT_ENTITLED": (["2026-06-12", "2026-06-13"], [2, 1], figures.OUTCOME_COLOURS["deny"]),
    }


def test_impact_by_customer_puts_the_most_affected_on_top():
    rows = pd.DataFrame([("acme", "allow/VALID", "deny/FEATURE_NOT_ENTITLED", 4),
                         ("globex", "allow/VALID", "alert/QUOTA_NEAR_LIMIT", 1),
                         ("globex", "alert/QUOTA_NEAR_LIMIT", "deny/QUOTA_EXCEEDED", 1)],
                        columns=["customer", "before", "after", "records"])
    fig = figures.impact_by_customer(rows, top=1)
    assert list(fig.layout.yaxis.categoryarray) == ["acme"]
    assert [(t.name, list(t.y), list(t.x)) for t in fig.data] == [("→ deny/FEATURE_NOT_ENTITLED", ["acme"], [4])]


def test_no_change_says_so():
    for fig in (figures.impact_over_time(pd.DataFrame(columns=["day", "after", "records"])),
                figures.impact_by_customer(pd.DataFrame(columns=["customer", "before", "after", "records"]))):
        assert fig.layout.annotations[0].text == "No decision would change"
