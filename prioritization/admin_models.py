"""Admin of the learned models: every model version with its metrics, and "Train now".

Model versions are records the training writes (read-only here). The list shows each
version's holdout AUC next to gradient boosting, the pooled model and the manual
weights; a version's page shows the whole comparison (AUC, log loss, lift), the
reliability table, the multipliers it gives each value, and the policies that use it.

URLs: ``/admin/prioritization/modelversion/`` (list, ``<id>/change/``) and
``/admin/prioritization/modelversion/train/`` (POST: train now, in Celery).
"""

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from kombu.exceptions import KombuError

from leads.admin import LargeTableAdmin
from prioritization import tasks
from prioritization.evaluation import MODEL_LABELS
from prioritization.models import ModelVersion, PolicyVersion, TrainingTrigger
from prioritization.training import training_in_progress

logger = logging.getLogger(__name__)

# Values listed per feature on a version's page (the strongest up and down first).
MULTIPLIERS_SHOWN = 15


def holdout_auc(version: ModelVersion, name: str) -> float | None:
    for model in version.metrics.get("holdout", []) if isinstance(version.metrics, dict) else []:
        if isinstance(model, dict) and model.get("name") == name:
            auc = model.get("auc")
            return float(auc) if isinstance(auc, int | float) else None
    return None


@dataclass(frozen=True)
class MultiplierRow:
    value: str
    multiplier: float


def strongest_multipliers(version: ModelVersion) -> list[tuple[str, list[MultiplierRow], int]]:
    """Per feature: the values that move the odds most (up and down), and how many exist."""
    result = []
    table = version.multipliers if isinstance(version.multipliers, dict) else {}
    for feature, values in table.items():
        if not isinstance(values, dict):
            continue
        # Rare values share one multiplier: show it once, not once per rare value.
        distinct: dict[float, list[str]] = {}
        for value, multiplier in values.items():
            distinct.setdefault(round(float(multiplier), 6), []).append(str(value))
        rows = [
            MultiplierRow(names[0] if len(names) == 1 else f"{len(names)} rare values ({names[0]}, ...)", m)
            for m, names in distinct.items()
        ]
        rows.sort(key=lambda r: -r.multiplier)
        if len(rows) > MULTIPLIERS_SHOWN:
            half = MULTIPLIERS_SHOWN // 2
            rows = rows[:half] + rows[-(MULTIPLIERS_SHOWN - half) :]
        result.append((feature, rows, len(values)))
    return result


@admin.register(ModelVersion)
class ModelVersionAdmin(LargeTableAdmin[ModelVersion]):
    list_display = (
        "__str__",
        "trained_at",
        "trigger",
        "training_rows",
        "conversion",
        "auc_learned",
        "auc_boosted",
        "auc_pooled",
        "auc_manual",
    )
    list_select_related = ("customer",)
    list_filter = ("trigger", "trained_at")
    search_fields = ("customer__name",)
    search_help_text = "Customer name."
    # A version per customer per day: the table grows by hundreds of thousands a year. Newest
    # first is newest id first (a run writes its versions with its own trained_at, one run at a
    # time), which the primary key serves; no index serves trained_at, and sorting by it, or by
    # any column, sorted the whole table at every load.
    ordering = ("-id",)
    sortable_by = ()
    fields = (
        "owner",
        "number",
        "trained_at",
        "trigger",
        "created_by",
        "window",
        "rows",
        "comparison",
        "multipliers_table",
        "used_by",
    )
    readonly_fields = fields
    change_list_template = "admin/prioritization/modelversion/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelVersion]:
        return super().get_queryset(request).select_related("customer", "created_by")

    @admin.display(description="model")
    def owner(self, obj: ModelVersion) -> str:
        return f"{obj.customer.name} (learned)" if obj.customer is not None else "pooled (all customers)"

    @admin.display(description="conversion", ordering="base_rate")
    def conversion(self, obj: ModelVersion) -> str:
        return f"{obj.base_rate:.1%}"

    def _auc(self, obj: ModelVersion, name: str) -> str:
        auc = holdout_auc(obj, name)
        return "-" if auc is None else f"{auc:.3f}"

    @admin.display(description="AUC learned")
    def auc_learned(self, obj: ModelVersion) -> str:
        return self._auc(obj, "learned")

    @admin.display(description="AUC gradient boosting")
    def auc_boosted(self, obj: ModelVersion) -> str:
        return self._auc(obj, "gradient_boosting")

    @admin.display(description="AUC pooled")
    def auc_pooled(self, obj: ModelVersion) -> str:
        return self._auc(obj, "pooled")

    @admin.display(description="AUC manual")
    def auc_manual(self, obj: ModelVersion) -> str:
        return self._auc(obj, "manual")

    @admin.display(description="training window")
    def window(self, obj: ModelVersion) -> str:
        if obj.window_start is None or obj.window_end is None:
            return "-"
        days = obj.settings.get("window_days") if isinstance(obj.settings, dict) else None
        limit = f" (outcomes of leads created in the {days} days before training)" if days else ""
        return f"{obj.window_start:%Y-%m-%d %H:%M} to {obj.window_end:%Y-%m-%d %H:%M} UTC{limit}"

    @admin.display(description="outcomes")
    def rows(self, obj: ModelVersion) -> str:
        own = "every customer's" if obj.customer_id is None else "this customer's"
        return (
            f"{obj.training_rows} {own} ({obj.positive_rows} converted, {obj.base_rate:.1%}); "
            f"{obj.holdout_rows} of them in the holdout; {obj.all_rows} outcomes of all customers in the "
            f"fit; trained in {obj.training_seconds:.1f} s"
        )

    @admin.display(description="holdout comparison")
    def comparison(self, obj: ModelVersion) -> SafeString:
        metrics = obj.metrics if isinstance(obj.metrics, dict) else {}
        models = [m for m in metrics.get("holdout", []) if isinstance(m, dict)]
        learned = next((m for m in models if m.get("name") == "learned"), None)
        return SafeString(
            render_to_string(
                "admin/prioritization/modelversion/metrics.html",
                {
                    "models": [
                        {**m, "label": MODEL_LABELS.get(str(m.get("name")), m.get("name"))} for m in models
                    ],
                    "reliability": learned.get("reliability", []) if learned else [],
                    "error": metrics.get("error", ""),
                    "pooled": obj.customer_id is None,
                },
            )
        )

    @admin.display(description="multipliers")
    def multipliers_table(self, obj: ModelVersion) -> SafeString:
        return SafeString(
            render_to_string(
                "admin/prioritization/modelversion/multipliers.html",
                {"features": strongest_multipliers(obj), "shown": MULTIPLIERS_SHOWN},
            )
        )

    @admin.display(description="used by")
    def used_by(self, obj: ModelVersion) -> SafeString:
        versions = PolicyVersion.objects.filter(learned_model=obj).select_related("policy").order_by("-pk")
        return SafeString(
            render_to_string(
                "admin/prioritization/modelversion/used_by.html", {"versions": list(versions[:20])}
            )
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "train/",
                self.admin_site.admin_view(self.train_now_view),
                name="prioritization_modelversion_train",
            ),
            *super().get_urls(),
        ]

    def train_now_view(self, request: HttpRequest) -> HttpResponse:
        """POST: start a training run in Celery (it may take minutes on a large store)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("prioritization.add_modelversion"):
            raise PermissionDenied
        changelist = HttpResponseRedirect(reverse("admin:prioritization_modelversion_changelist"))
        # A run under way now would make the task skip: say so instead of sending it. One may
        # still start before the task does: the task's own lock decides then, and the time of
        # the press lets it skip when a run since then has trained (a double click).
        if training_in_progress():
            self.message_user(
                request,
                "A training run is already in progress: its model versions appear here when it finishes, "
                "and learned and blended policies then move to them. Nothing else was started.",
                messages.INFO,
            )
            return changelist
        # Enqueued at once, not on commit: this request writes nothing the task must see.
        try:
            tasks.train_models.delay(
                trigger=TrainingTrigger.ADMIN,
                user_id=request.user.pk,
                requested_at=timezone.now().isoformat(),
            )
        except (KombuError, OSError) as exc:
            logger.exception("Could not enqueue a training run from the admin.")
            self.message_user(
                request,
                f"Training could not be started: the task queue is unreachable ({exc}). Try again, or run "
                "`manage.py train_models` on a server.",
                messages.ERROR,
            )
        else:
            self.message_user(
                request,
                "Training started in the background. New model versions appear here when it finishes; "
                "learned and blended policies then move to them.",
                messages.SUCCESS,
            )
        return changelist

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "can_train": request.user.has_perm("prioritization.add_modelversion"),
        }
        return super().changelist_view(request, context)
