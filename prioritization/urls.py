from django.urls import path

from prioritization import api, sla_api

urlpatterns = [
    path("next-lead/", api.NextLeadView.as_view(), name="next-lead"),
    path("leads/<int:lead_id>/outcome/", api.OutcomeView.as_view(), name="lead-outcome"),
    path("leads/<int:lead_id>/release/", api.ReleaseView.as_view(), name="lead-release"),
    path("leads/<int:lead_id>/extend/", api.ExtendView.as_view(), name="lead-extend"),
    path("leads/<int:lead_id>/withdraw/", api.WithdrawView.as_view(), name="lead-withdraw"),
    path("stats/sla/", sla_api.SlaStatsView.as_view(), name="stats-sla"),
]
