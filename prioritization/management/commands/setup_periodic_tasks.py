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
                interval, _ = IntervalSchedule.objects.get_or_create(
                    every=schedule.every_seconds, period=IntervalSchedule.SECONDS
                )
                PeriodicTask.objects.update_or_create(
                    name=schedule.name,
                    defaults={
                        "task": schedule.task,
                        "interval": interval,
                        "crontab": None,
                        "solar": None,
                        "clocked": None,
                        "enabled": True,
                        "description": schedule.description,
                    },
                )
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
