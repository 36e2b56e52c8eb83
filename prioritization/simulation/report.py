"""What a comparison shows: a text table (policies as columns) and a PNG chart."""

import io
from collections.abc import Sequence
from typing import Any

FIGURE_ROWS: tuple[tuple[str, str], ...] = (
    ("sla_attainment", "SLA attainment"),
    ("tat_p50_s", "TAT p50"),
    ("tat_p90_s", "TAT p90"),
    ("expected_conversions", "expected conversions"),
    ("conversions", "conversions (sampled)"),
    ("calls", "calls"),
    ("stale_calls", "calls to stale leads"),
    ("never_called", "leads never called"),
)
CUSTOMER_ROWS: tuple[tuple[str, str], ...] = (
    ("sla_attainment", "SLA attainment"),
    ("tat_p50_s", "TAT p50"),
    ("tat_p90_s", "TAT p90"),
    ("expected_conversions", "expected conversions"),
    ("stale_calls", "calls to stale leads"),
    ("never_called", "leads never called"),
)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "sla_attainment":
        return f"{100 * value:.1f}%"
    if key.endswith("_s"):
        return format_duration(value)
    if key == "expected_conversions":
        return f"{value:,.1f}"
    return f"{value:,}"


def _vs_first(policies: Sequence[dict[str, Any]], policy: dict[str, Any]) -> str:
    base = policies[0].get("expected_conversions") or 0
    if policy is policies[0] or not base:
        return ""
    return f"{100 * (policy['expected_conversions'] / base - 1):+.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def comparison_rows(policies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the admin's table: (label, cells per policy), overall then per customer."""
    rows: list[dict[str, Any]] = []
    for key, label in FIGURE_ROWS:
        rows.append({"label": label, "cells": [format_value(key, p.get(key)) for p in policies], "group": ""})
        if key == "expected_conversions":
            rows.append(
                {
                    "label": f"vs {policies[0]['name']}",
                    "cells": [_vs_first(policies, p) for p in policies],
                    "group": "",
                }
            )
    customers = list(policies[0].get("customers", {})) if policies else []
    for customer in customers:
        for key, label in CUSTOMER_ROWS:
            rows.append(
                {
                    "label": label,
                    "cells": [format_value(key, p["customers"][customer].get(key)) for p in policies],
                    "group": customer,
                }
            )
    return rows


def format_table(policies: Sequence[dict[str, Any]], *, sla_target: float | None = None) -> str:
    """The comparison as text: every figure overall, then per customer; policies as columns."""
    header = ["", *[p["name"] for p in policies]]
    lines: list[str] = []
    current = ""
    body: list[list[str]] = []
    for row in comparison_rows(policies):
        if row["group"] != current:
            current = row["group"]
            body.append([f"{current}:", *["" for _ in policies]])  # a customer's heading
        label = f"  {row['label']}" if row["group"] else row["label"]
        body.append([label, *row["cells"]])
    lines.extend(_table(header, body))
    if sla_target is not None:
        lines.append(f"SLA target: {100 * sla_target:.0f}% of live leads first called within the window.")
    return "\n".join(lines)


def render_chart(policies: Sequence[dict[str, Any]], *, sla_target: float, sla_minutes: float) -> bytes:
    """A PNG: SLA per customer against the target, expected conversions, the time to first
    call of live leads, and calls to stale / leads never called."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib import pyplot as plt

    # Policy and customer names are drawn as they read: with math text on, matplotlib takes
    # the text between two "$" for a formula ("$100 or $200" lost its dollars, "A $\\frac$ B"
    # failed the run).
    with matplotlib.rc_context({"text.parse_math": False}):
        return _render_chart(plt, policies, sla_target=sla_target, sla_minutes=sla_minutes)


def _legend(ax: Any, artists: Sequence[Any], labels: Sequence[str], **options: Any) -> None:
    """A legend of these artists. Left to find them, matplotlib skips every label that starts
    with "_", and a policy named "_draft" would have no entry."""
    ax.legend(list(artists), list(labels), **options)


def _render_chart(
    plt: Any, policies: Sequence[dict[str, Any]], *, sla_target: float, sla_minutes: float
) -> bytes:
    names = [p["name"] for p in policies]
    customers = list(policies[0].get("customers", {})) if policies else []
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(policies))]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100)
    width = 0.8 / max(1, len(policies))

    sla = axes[0][0]
    groups = ["all", *customers]
    sla_bars = []
    for i, policy in enumerate(policies):
        values = [policy.get("sla_attainment")] + [
            policy["customers"][c].get("sla_attainment") for c in customers
        ]
        sla_bars.append(
            sla.bar(
                [g + i * width for g in range(len(groups))],
                [100 * (v or 0) for v in values],
                width,
                color=colours[i],
            )
        )
    target = sla.axhline(100 * sla_target, color="black", linestyle="--", linewidth=1)
    sla.set_xticks([g + width * (len(policies) - 1) / 2 for g in range(len(groups))], groups, fontsize=8)
    sla.set_ylim(0, 119)  # room above 100% for the legend
    sla.set_ylabel(f"% first called within {sla_minutes:g} min")
    sla.set_title("SLA attainment")
    _legend(
        sla,
        [*sla_bars, target],
        [*names, f"target {100 * sla_target:.0f}%"],
        fontsize=8,
        loc="upper center",
        ncol=len(policies) + 1,
    )

    conversions = axes[0][1]
    expected = [p.get("expected_conversions") or 0 for p in policies]
    bars = conversions.bar(names, expected, color=colours)
    for bar, policy in zip(bars, policies, strict=True):
        label = _vs_first(policies, policy)
        conversions.annotate(
            f"{bar.get_height():,.0f} {label}".strip(),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    conversions.set_title("Expected conversions")

    tat = axes[1][0]
    curves, curve_names = [], []
    for i, policy in enumerate(policies):
        curve = policy.get("tat_curve_s") or []
        if curve:
            minutes = [(value or 0) / 60 for value in curve]
            curves += tat.plot(minutes, range(len(minutes)), color=colours[i])
            curve_names.append(policy["name"])
    tat.axvline(sla_minutes, color="black", linestyle="--", linewidth=1)
    tat.set_xscale("symlog", linthresh=1)
    tat.set_xlim(left=0)
    tat.set_xlabel("minutes from arrival to first call (never called: until the end)")
    tat.set_ylabel("% of live leads")
    tat.set_title("Time to first call")
    _legend(tat, curves, curve_names, fontsize=8, loc="lower right")

    counts = axes[1][1]
    count_bars = [
        counts.bar(
            [g + i * width for g in range(2)],
            [policy.get("stale_calls") or 0, policy.get("never_called") or 0],
            width,
            color=colours[i],
        )
        for i, policy in enumerate(policies)
    ]
    counts.set_xticks(
        [g + width * (len(policies) - 1) / 2 for g in range(2)],
        ["calls to stale leads", "leads never called"],
    )
    counts.set_title("Stale calls and leads never called")
    _legend(counts, count_bars, names, fontsize=8)

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
