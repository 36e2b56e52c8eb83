from django.apps import AppConfig


class LeadsConfig(AppConfig):
    name = "leads"
    verbose_name = "Lead data store"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The admin app, first in INSTALLED_APPS, has imported every app's admin module by now.
        from leads.admin_widgets import guard_every_admin

        guard_every_admin()
