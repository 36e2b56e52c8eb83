from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from prioritization.schedules import NAME_PREFIX, SCHEDULES


class Command(BaseCommand):
    help = (
        "Create or update the periodic tasks in django-celery-beat, and remove leadrank's own "
        "that are no longer declared (idempotent)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            for schedule in SCHEDULES:
                declared: dict[str, Any] = {
                    "task": schedule.task,
                    "interval": _interval(schedule.every_seconds),
                    "crontab": None,
                    "solar": None,
                    "clocked": None,
                    "enabled": True,
                    "description": schedule.description,
                    # Whatever was changed by hand in the beat admin goes back as declared: a
                    # past expiry or a one-off run would leave the task dead.
                    "args": "[]",
                    "kwargs": "{}",
                    "headers": "{}",
                    "one_off": False,
                    "start_time": None,
                    "expires": None,
                    "expire_seconds": None,
                    "queue": None,
                    "exchange": None,
                    "routing_key": None,
                    "priority": None,
                }
                task = PeriodicTask.objects.filter(name=schedule.name).first()
                if task is None:
                    PeriodicTask.objects.create(name=schedule.name, **declared)
                elif any(getattr(task, field) != value for field, value in declared.items()):
                    # Saved only when something differs: a save moves date_changed, from which
                    # beat counts the first interval of a task that never ran, so saving on
                    # every start (make run calls this) put off the first daily training for ever.
                    for field, value in declared.items():
                        setattr(task, field, value)
                    task.save()
            # A schedule renamed or dropped in a release: beat would go on sending its task,
            # which workers may no longer know.
            retired = PeriodicTask.objects.filter(name__startswith=NAME_PREFIX).exclude(
                name__in=[schedule.name for schedule in SCHEDULES]
            )
            removed = sorted(retired.values_list("name", flat=True))
            retired.delete()
        self.stdout.write(f"{len(SCHEDULES)} periodic tasks set up.")
        if removed:
            self.stdout.write(f"Removed {len(removed)} retired: {', '.join(removed)}.")


def _interval(seconds: int) -> IntervalSchedule:
    """The interval row of that many seconds. django-celery-beat's table has no unique
    constraint, so the beat admin may hold two such rows: the first is used, not refused."""
    existing = (
        IntervalSchedule.objects.filter(every=seconds, period=IntervalSchedule.SECONDS).order_by("pk").first()
    )
    return existing or IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS)
