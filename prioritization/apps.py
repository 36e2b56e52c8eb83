from django.apps import AppConfig


class PrioritizationConfig(AppConfig):
    name = "prioritization"
    verbose_name = "Prioritization"
    default_auto_field = "django.db.models.BigAutoField"
