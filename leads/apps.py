from django.apps import AppConfig


class LeadsConfig(AppConfig):
    name = "leads"
    verbose_name = "Lead data store"
    default_auto_field = "django.db.models.BigAutoField"
