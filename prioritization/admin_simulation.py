"""The admin's policy simulator: a customer's draft policy against the policy in force for
it and FIFO, simulated in the background; the table and the chart when it is done.

URLs: ``/admin/prioritization/simulationrun/`` (runs, newest first), ``add/`` (the form:
a customer, the draft's settings, the scenario), ``<id>/change/`` (status, table, chart)
and ``<id>/chart.png``. The draft's fields are the policy admin's own (validated the same
way, see :mod:`prioritization.admin_preview`); nothing is saved to any policy.
"""

import datetime as dt
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from leads.admin_widgets import BaseAdmin
from leads.ids import parse_id
from leads.importers import TIMESTAMP_RANGE_ERROR, timestamp_in_range
from leads.models import Customer
from prioritization.admin_preview import (
    clean_settings,
    default_version,
    offer_learned_models,
    refuse_foreign_model,
    settings_form_fields,
    starting_values,
)
from prioritization.models import ModelVersion, PolicyVersion, SimulationRun, SimulationStatus
from prioritization.services import current_versions
from prioritization.simulation.comparison import PolicyError
from prioritization.simulation.report import comparison_rows
from prioritization.simulation.runs import start_simulation_run
from prioritization.simulation.scenario import (
    DEFAULT_START,
    MAX_CONTRACTORS,
    MAX_DAYS,
    MIN_DAYS,
    SIMULATED_PERIOD_ERROR,
    simulated_period_in_range,
)

# The admin runs the command line's headline week by default: three policies (two at once)
# take about half as long again as the headline comparison.
ADMIN_DEFAULT_DAYS = 7.0
ADMIN_DEFAULT_CONTRACTORS = 15
# A page of a run still under way reloads itself this often.
REFRESH_SECONDS = 5


class _SimulationFormBase(forms.Form):
    customer = forms.ModelChoiceField(
        queryset=Customer.objects.order_by("name"),
        help_text="The draft is compared with the policy in force for this customer "
        "(its own policy, or the default).",
    )
    contractors = forms.IntegerField(
        min_value=1,
        max_value=MAX_CONTRACTORS,
        initial=ADMIN_DEFAULT_CONTRACTORS,
        help_text="Spread over the call centre's eight shifts.",
    )
    start = forms.DateTimeField(
        initial=DEFAULT_START.strftime("%Y-%m-%d %H:%M"),
        help_text="UTC. The call log covers 2026-02-02 to 2026-03-01 (February 1999, same weekdays).",
    )
    days = forms.FloatField(min_value=MIN_DAYS, max_value=MAX_DAYS, initial=ADMIN_DEFAULT_DAYS)
    seed = forms.IntegerField(initial=1, help_text="The same seed gives the same figures.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any customer's draft, so any model (clean() refuses another customer's); the list
        # shows the one the chosen customer's draft starts from.
        chosen = parse_id(self.data.get("customer")) if self.is_bound else self.initial.get("customer")
        offer_learned_models(self, ModelVersion.objects.all(), start=_start_for(chosen))

    def clean_start(self) -> dt.datetime:
        start: dt.datetime = self.cleaned_data["start"]
        if not timestamp_in_range(start):
            raise forms.ValidationError(TIMESTAMP_RANGE_ERROR)
        return start.astimezone(dt.UTC)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, days = cleaned.get("start"), cleaned.get("days")
        if start is not None and days is not None and not simulated_period_in_range(start, days):
            # Said here rather than by a run that fails in the background.
            self.add_error("days", SIMULATED_PERIOD_ERROR)
        self.settings_values = clean_settings(self, cleaned)
        customer: Customer | None = cleaned.get("customer")
        if customer is not None:
            # The draft is one of this customer's policies: the same models as its policy page.
            self.settings_values = refuse_foreign_model(self, self.settings_values, customer_id=customer.pk)
        return cleaned


SimulationForm = cast(
    type[_SimulationFormBase],
    type("SimulationForm", (_SimulationFormBase,), {"__module__": __name__, **settings_form_fields()}),
)


def _start_for(customer_id: int | None) -> PolicyVersion | None:
    """The version a draft starts from: the one in force for the customer (the default's
    without one)."""
    if customer_id is None:
        return default_version()
    return current_versions([customer_id])[customer_id]


def _settings_for(customer: Customer | None) -> dict[str, Any]:
    """The draft's starting settings (:func:`_start_for`)."""
    return starting_values(_start_for(customer.pk if customer is not None else None))


def _draft_changes(run: SimulationRun) -> list[tuple[str, Any, Any]]:
    """(field, in force, draft) for every setting the draft changes."""
    return [
        (name, run.active.get(name), value)
        for name, value in run.draft.items()
        if run.active.get(name) != value
    ]


@admin.register(SimulationRun)
class SimulationRunAdmin(BaseAdmin[SimulationRun]):
    list_display = ("__str__", "created_at", "customer", "status", "summary", "created_by")
    list_select_related = ("customer", "created_by")
    list_filter = ("status",)
    ordering = ("-created_at", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[SimulationRun]:
        # The chart bytes and the figures stay out of the list's query.
        return super().get_queryset(request).defer("chart_png", "results", "draft", "active")

    @admin.display(description="result")
    def summary(self, obj: SimulationRun) -> str:
        return obj.message

    def has_change_permission(self, request: HttpRequest, obj: SimulationRun | None = None) -> bool:
        return False  # runs are records; a new comparison is a new run

    def get_urls(self) -> list[URLPattern]:
        app_label, model_name = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("add/", view(self.start_view), name=f"{app_label}_{model_name}_add"),
            path("<path:object_id>/chart.png", view(self.chart_view), name=f"{app_label}_{model_name}_chart"),
            path("<path:object_id>/change/", view(self.run_view), name=f"{app_label}_{model_name}_change"),
            *super().get_urls(),
        ]

    def _run(self, request: HttpRequest, object_id: str) -> SimulationRun:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = self.get_object(request, object_id)
        if run is None:
            raise Http404("No simulation run with this id.")
        return run

    def start_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the form, the draft starting from the chosen customer's policy in force;
        POST: validate, record the run, enqueue it, show its page."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = SimulationForm(request.POST)
            if form.is_valid() and form.settings_values is not None:
                data = form.cleaned_data
                try:
                    run, started = start_simulation_run(
                        customer=data["customer"],
                        draft=form.settings_values,
                        contractors=data["contractors"],
                        start=data["start"],
                        days=data["days"],
                        seed=data["seed"],
                        user=request.user,
                    )
                except PolicyError as exc:
                    form.add_error(None, str(exc))
                else:
                    if started:
                        self.message_user(
                            request,
                            f"Simulation {run.pk} started in the background: this page shows its figures "
                            "when it is done.",
                            messages.SUCCESS,
                        )
                    else:
                        self.message_user(
                            request,
                            f"You already started this comparison (simulation {run.pk}, {run.status}): "
                            "here it is; no second run was started.",
                            messages.INFO,
                        )
                    return HttpResponseRedirect(
                        reverse("admin:prioritization_simulationrun_change", args=[run.pk])
                    )
        else:
            chosen = parse_id(request.GET.get("customer"))
            customer = Customer.objects.filter(pk=chosen).first() if chosen is not None else None
            initial = {**_settings_for(customer), "customer": customer.pk if customer else None}
            form = SimulationForm(initial=initial)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Simulate a draft policy",
            "form": form,
        }
        return TemplateResponse(request, "admin/prioritization/simulation_form.html", context)

    def run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        run = self._run(request, object_id)
        running = run.status in (SimulationStatus.QUEUED, SimulationStatus.RUNNING)
        if run.status == SimulationStatus.FAILED:
            messages.error(request, f"The simulation failed: {run.message}")
        policies = run.results.get("policies", []) if run.status == SimulationStatus.DONE else []
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": str(run),
            "run": run,
            "running": running,
            "refresh_seconds": REFRESH_SECONDS,
            "policies": policies,
            "rows": comparison_rows(policies) if policies else [],
            "scenario": run.results.get("scenario", {}),
            "notes": run.results.get("notes", run.parameters.get("notes", [])),
            "again_url": reverse("admin:prioritization_simulationrun_add")
            + f"?customer={run.customer_id or ''}",
            "changes": _draft_changes(run),
        }
        return TemplateResponse(request, "admin/prioritization/simulation_run.html", context)

    def chart_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        run = self._run(request, object_id)
        if run.status != SimulationStatus.DONE or not run.chart_png:
            raise Http404("This run has no chart (yet).")
        return HttpResponse(bytes(run.chart_png), content_type="image/png")
