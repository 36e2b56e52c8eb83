"""The SLA dashboard of the admin (``/admin/sla/``): attainment over time against the
target, queue depth per campaign, the TAT histogram and the leads at risk, filtered by
customer, campaign and range.

Figures come from :func:`prioritization.sla.sla_report`, the same selector as the stats
API. Charts are drawn on the server with matplotlib's object API (no pyplot, so no global
figure state shared between requests) as SVG and embedded as ``data:`` images: nothing
is fetched from a CDN or a second URL, the page is one request, and text stays sharp.
"""

import base64
import datetime as dt
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from leads.admin_widgets import may_view_leads
from leads.ids import parse_id
from leads.importers import DAY_RANGE_ERROR, day_in_range
from leads.models import Campaign, Customer
from prioritization.sla import (
    MAX_RANGE_DAYS,
    TAT_BUCKET_EDGES_SECONDS,
    CustomerFigures,
    QueueDepth,
    SlaReport,
    sla_report,
    utc_day,
)

# The dashboard opens on the last two weeks: enough days to see a trend.
DEFAULT_RANGE_DAYS = 14
# Lines of the attainment chart when every customer is shown (the biggest by leads).
MAX_CUSTOMER_LINES = 8
# Bars of the queue chart (the deepest campaigns), and the length of their labels.
MAX_QUEUE_BARS = 15
QUEUE_LABEL_CHARS = 40

# The TAT chart groups the fine histogram buckets into these (upper bounds in minutes;
# the last group is open).
TAT_GROUPS_MINUTES: tuple[float, ...] = (5, 10, 15, 20, 25, 30, 45, 60, 120, 240, 720, 1440, 10080)

_SVG_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "leadrank",
    "font.size": 9,
    # Names are drawn as they read. With math text on, matplotlib takes the text between
    # two "$" for a formula: "$100 or $200" lost its dollars, and a campaign named
    # "A $\frac$ B" (customers' systems name campaigns) failed the whole page.
    "text.parse_math": False,
}
_COLOURS = {
    "live_due": "#1f77b4",
    "live_later": "#9ecae1",
    "stale_due": "#e6550d",
    "stale_later": "#fdae6b",
    "held": "#31a354",
}
_TARGET = "#c0392b"


# --- Filters ----------------------------------------------------------------------------------


class _CampaignField(forms.ModelChoiceField[Campaign]):
    def label_from_instance(self, obj: Campaign) -> str:
        return f"{obj.customer.name} / {obj.name}"


class DashboardFilterForm(forms.Form):
    customer = forms.ModelChoiceField(
        queryset=Customer.objects.order_by("name"), required=False, empty_label="All customers"
    )
    campaign = _CampaignField(
        queryset=Campaign.objects.select_related("customer").order_by("customer__name", "name"),
        required=False,
        empty_label="All campaigns",
    )

    def __init__(self, *args: Any, today: dt.date, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword: the range fields are added here under their URL names.
        self.fields["from"] = forms.DateField(
            required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From (UTC day)"
        )
        self.fields["to"] = forms.DateField(
            required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (UTC day)"
        )
        self.today = today
        customer_id = parse_id(str(self.data.get("customer", ""))) if self.is_bound else None
        campaigns = self.fields["campaign"]
        assert isinstance(campaigns, _CampaignField)
        if customer_id is not None:
            # Only the chosen customer's campaigns to pick from.
            campaigns.queryset = (
                Campaign.objects.select_related("customer").filter(customer_id=customer_id).order_by("name")
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("from"), data.get("to")
        for name, day in (("from", start), ("to", end)):
            if day is not None and not day_in_range(day):
                self.add_error(name, DAY_RANGE_ERROR)
        if "from" in self.errors or "to" in self.errors:
            return data
        end = end or self.today
        start = start or min(end, self.today) - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
        if start > end:
            raise forms.ValidationError(f"'From' ({start}) is after 'To' ({end}).")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise forms.ValidationError(f"A range is at most {MAX_RANGE_DAYS} days.")
        data["from"], data["to"] = start, end
        customer, campaign = data.get("customer"), data.get("campaign")
        if customer is not None and campaign is not None and campaign.customer_id != customer.pk:
            self.add_error("campaign", f"{campaign.name} is a campaign of {campaign.customer.name}.")
        return data


# --- Charts -----------------------------------------------------------------------------------


def _svg_data_uri(figure: Figure) -> str:
    with matplotlib.rc_context(_SVG_RC):
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def attainment_chart(
    days: Sequence[dt.date], lines: Sequence[tuple[str, Sequence[float | None]]], targets: Sequence[float]
) -> str:
    """Daily attainment (in %) per line, with each distinct target as a dashed line."""
    with matplotlib.rc_context(_SVG_RC):
        figure = Figure(figsize=(8, 3.2), layout="constrained")
        ax = figure.subplots()
        ax.set_title("SLA attainment per day (leads by UTC day of arrival)", loc="left")
        values = [v for _, series in lines for v in series if v is not None]
        if not values:
            _empty(ax, "No lead of this range is decided yet (in SLA or missed).")
            return _svg_data_uri(figure)
        # Handles given to the legend: left to find them, matplotlib skips every label that
        # starts with "_", and a customer named "_Acme" would have a line without a name.
        handles: list[Line2D] = []
        labels: list[str] = []
        for label, series in lines:
            handles += ax.plot(
                range(len(days)),
                [math.nan if v is None else 100 * v for v in series],
                marker="o",
                markersize=3,
                linewidth=1.5,
            )
            labels.append(label)
        for target in sorted(set(targets)):
            handles.append(ax.axhline(100 * target, color=_TARGET, linestyle="--", linewidth=1))
            labels.append(f"target {target:.0%}")
        low = min([*values, *targets])
        ax.set_ylim(max(0.0, math.floor(100 * low / 10) * 10 - 10), 101)
        ax.set_ylabel("% in SLA")
        ax.grid(axis="y", alpha=0.3)
        # Days as categories: at most about 8 labels, whatever the range.
        step = max(1, math.ceil(len(days) / 8))
        ax.set_xticks(range(0, len(days), step), [f"{d:%d %b}" for d in days[::step]])
        figure.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
        return _svg_data_uri(figure)


def queue_chart(rows: Sequence[tuple[str, QueueDepth]]) -> str:
    """Stacked horizontal bars: each campaign's open leads by kind, deepest first."""
    with matplotlib.rc_context(_SVG_RC):
        deepest = sorted((r for r in rows if r[1].total), key=lambda r: -r[1].total)[:MAX_QUEUE_BARS]
        figure = Figure(figsize=(8, 1.4 + 0.32 * max(len(deepest), 3)), layout="constrained")
        ax = figure.subplots()
        shown = f" ({len(deepest)} deepest of {len(rows)})" if len(deepest) < len(rows) else ""
        ax.set_title(f"Queue depth per campaign now{shown}", loc="left")
        if not deepest:
            _empty(ax, "No open leads.")
            return _svg_data_uri(figure)
        labels = [label for label, _ in reversed(deepest)]
        # One row per campaign by position: bars placed by label text would share a row
        # (and hide each other) whenever two campaigns' labels read the same.
        positions = list(range(len(deepest)))
        left = [0] * len(deepest)
        for part, text in (
            ("live_due", "live, due"),
            ("live_later", "live, later"),
            ("stale_due", "stale, due"),
            ("stale_later", "stale, later"),
            ("held", "being called"),
        ):
            widths = [getattr(depth, part) for _, depth in reversed(deepest)]
            ax.barh(positions, widths, left=left, color=_COLOURS[part], label=text)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.set_yticks(positions, labels)
        ax.set_xlabel("leads")
        ax.grid(axis="x", alpha=0.3)
        figure.legend(loc="outside lower center", fontsize=8, ncols=5, frameon=False)
        return _svg_data_uri(figure)


def _campaign_label(customer: str, campaign: str) -> str:
    """``customer / campaign`` in at most QUEUE_LABEL_CHARS, shortening the customer's name
    first: cut as a whole, a long customer name left every one of its campaigns the same label."""
    label = f"{customer} / {campaign}"
    if len(label) <= QUEUE_LABEL_CHARS:
        return label
    room = max(QUEUE_LABEL_CHARS - len(campaign) - len(" / ") - 1, 8)
    if len(customer) > room:
        customer = customer[:room] + "…"
    return f"{customer} / {campaign}"[:QUEUE_LABEL_CHARS]


def tat_groups(histogram: Sequence[int]) -> list[tuple[str, int, float]]:
    """(label, leads, lower bound in minutes) of each display group of a TAT histogram."""
    groups: list[tuple[str, int, float]] = []
    low = 0.0
    for high in (*TAT_GROUPS_MINUTES, math.inf):
        count = sum(
            n for edge, n in zip(TAT_BUCKET_EDGES_SECONDS, histogram, strict=True) if low <= edge / 60 < high
        )
        groups.append((_minutes_label(low, high), count, low))
        low = high
    return groups


def _minutes_label(low: float, high: float) -> str:
    def short(minutes: float) -> str:
        if minutes >= 1440:
            return f"{minutes / 1440:g}d"
        if minutes >= 60:
            return f"{minutes / 60:g}h"
        return f"{minutes:g}"

    return f"> {short(low)}" if math.isinf(high) else f"{short(low)}-{short(high)}"


def tat_chart(histogram: Sequence[int], *, window_minutes: float | None, percentiles: str) -> str:
    """Leads by time to first call (minutes); groups inside the SLA window in green."""
    with matplotlib.rc_context(_SVG_RC):
        figure = Figure(figsize=(8, 3), layout="constrained")
        ax = figure.subplots()
        ax.set_title(f"Time to first call of the range's leads ({percentiles})", loc="left")
        if not sum(histogram):
            _empty(ax, "No lead of this range has been called yet.")
            return _svg_data_uri(figure)
        groups = tat_groups(histogram)
        colours = [
            "#31a354" if window_minutes is not None and low < window_minutes else "#6b6ecf"
            for _, _, low in groups
        ]
        ax.bar([g[0] for g in groups], [g[1] for g in groups], color=colours)
        ax.set_xlabel(
            "minutes from arrival to first call"
            + ("; green: within the SLA window" if window_minutes else "")
        )
        ax.set_ylabel("leads")
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
        return _svg_data_uri(figure)


# --- The page ---------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@dataclass(frozen=True)
class Charts:
    attainment: str
    queue: str
    tat: str


def build_charts(report: SlaReport) -> Charts:
    days = [d.day for d in report.overall.daily]
    customers: Sequence[CustomerFigures] = report.customers
    if len(customers) == 1:
        lines = [(customers[0].name, [d.sla.attainment for d in customers[0].figures.daily])]
    else:
        biggest = sorted(customers, key=lambda c: -c.figures.sla_range.live_leads)[:MAX_CUSTOMER_LINES]
        lines = [("all customers", [d.sla.attainment for d in report.overall.daily])]
        lines += [
            (c.name, [d.sla.attainment for d in c.figures.daily])
            for c in biggest
            if c.figures.sla_range.live_leads
        ]
    names = {c.customer_id: c.name for c in customers}
    windows = {c.sla_window_minutes for c in customers}
    tat = report.overall.tat
    percentiles = ", ".join(
        f"{name} {_duration(value)}"
        for name, value in (("p50", tat.p50_seconds), ("p90", tat.p90_seconds), ("p99", tat.p99_seconds))
    )
    return Charts(
        attainment=attainment_chart(days, lines, [c.sla_target for c in customers]),
        queue=queue_chart(
            [
                (_campaign_label(str(names.get(c.customer_id, c.customer_id)), c.name), c.figures.queue)
                for c in report.campaigns
            ]
        ),
        tat=tat_chart(
            tat.histogram,
            window_minutes=windows.pop() if len(windows) == 1 else None,
            percentiles=percentiles,
        ),
    )


def _joined(errors: Any) -> str:
    return " ".join(str(error) for error in errors)


def sla_dashboard_view(request: HttpRequest) -> HttpResponse:
    # The page lists leads and every customer's figures: staff who may view leads only.
    if not may_view_leads(request):
        raise PermissionDenied
    now = timezone.now()
    today = utc_day(now)
    # Always bound: no parameters at all is a valid filter (every customer, the last 14 days).
    form = DashboardFilterForm(request.GET, today=today)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "SLA dashboard",
        "form": form,
        "now": now,
    }
    if not form.is_valid():
        problems = [
            _joined(errors) if name == "__all__" else f"{form.fields[name].label or name}: {_joined(errors)}"
            for name, errors in form.errors.items()
        ]
        messages.error(request, "Check the filters. " + " ".join(problems))
        return TemplateResponse(request, "admin/prioritization/sla_dashboard.html", context, status=400)
    filters = form.cleaned_data
    # Show the range actually used (defaults filled in) in the filter fields.
    context["form"] = DashboardFilterForm(
        {
            "customer": filters["customer"].pk if filters.get("customer") else "",
            "campaign": filters["campaign"].pk if filters.get("campaign") else "",
            "from": filters["from"].isoformat(),
            "to": filters["to"].isoformat(),
        },
        today=today,
    )
    customer = filters.get("customer")
    campaign = filters.get("campaign")
    report = sla_report(
        now=now,
        start=filters["from"],
        end=filters["to"],
        customer_id=customer.pk if customer is not None else None,
        campaign_id=campaign.pk if campaign is not None else None,
    )
    names = {c.customer_id: c.name for c in report.customers}
    campaign_names = {c.campaign_id: c.name for c in report.campaigns}
    overall = report.overall
    context.update(
        report=report,
        charts=build_charts(report),
        scope=campaign.name
        if campaign is not None
        else customer.name
        if customer is not None
        else "All customers",
        tiles=[
            (
                "In SLA, range",
                _percent(overall.sla_range.attainment),
                f"{overall.sla_range.in_sla} in SLA, {overall.sla_range.missed} missed",
            ),
            ("In SLA, today", _percent(overall.sla_today.attainment), f"{overall.sla_today.pending} pending"),
            (
                "In SLA, last 7 days",
                _percent(overall.sla_last_7_days.attainment),
                f"{overall.sla_last_7_days.live_leads} live leads",
            ),
            (
                "TAT p50 / p90 / p99",
                f"{_duration(overall.tat.p50_seconds)}",
                f"{_duration(overall.tat.p90_seconds)} / {_duration(overall.tat.p99_seconds)}",
            ),
            ("At risk now", str(overall.at_risk), "never called, deadline near"),
            (
                "Queue",
                str(overall.queue.total),
                f"{overall.queue.live_due} live due, {overall.queue.held} being called",
            ),
            (
                "Contractors active",
                str(overall.contractors_active),
                f"claimed in {report.active_minutes:g} min or holding",
            ),
        ],
        customer_rows=[
            {
                "name": c.name,
                "id": c.customer_id,
                "range": _percent(c.figures.sla_range.attainment),
                "today": _percent(c.figures.sla_today.attainment),
                "week": _percent(c.figures.sla_last_7_days.attainment),
                "target": _percent(c.sla_target),
                "meets_target": c.meets_target,
                "window": f"{c.sla_window_minutes:g} min",
                "pending": c.figures.sla_range.pending,
                "p50": _duration(c.figures.tat.p50_seconds),
                "p90": _duration(c.figures.tat.p90_seconds),
                "at_risk": c.figures.at_risk,
                "queue": c.figures.queue.total,
                "contractors": c.figures.contractors_active,
            }
            for c in report.customers
        ],
        campaign_rows=[
            {
                "name": c.name,
                "customer": names.get(c.customer_id, c.customer_id),
                "range": _percent(c.figures.sla_range.attainment),
                "today": _percent(c.figures.sla_today.attainment),
                "queue": c.figures.queue,
                "at_risk": c.figures.at_risk,
                "contractors": c.figures.contractors_active,
            }
            for c in report.campaigns
        ],
        at_risk_rows=[
            {
                "lead": lead,
                "customer": names.get(lead.customer_id, lead.customer_id),
                "campaign": campaign_names.get(lead.campaign_id, lead.campaign_id),
                "minutes_left": f"{lead.minutes_left(now):.1f}",
            }
            for lead in report.at_risk_leads
        ],
    )
    return TemplateResponse(request, "admin/prioritization/sla_dashboard.html", context)


def dashboard_urls() -> list[URLPattern]:
    """``/admin/sla/``, wrapped by the admin site (staff login, never cached)."""
    return [path("", admin.site.admin_view(sla_dashboard_view), name="sla-dashboard")]
