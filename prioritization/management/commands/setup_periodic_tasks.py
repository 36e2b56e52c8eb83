from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from prioritization.schedules import SCHEDULES


class Command(BaseCommand):
    help = "Create or update the periodic tasks in django-celery-beat (idempotent)."

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
        self.stdout.write(f"{len(SCHEDULES)} periodic tasks set up.")
