from django.urls import path

from leads import api

urlpatterns = [
    path("leads/", api.LeadCollectionView.as_view(), name="lead-collection"),
    path("leads/<int:lead_id>/", api.LeadDetailView.as_view(), name="lead-detail"),
    path("customers/", api.CustomerListView.as_view(), name="customer-list"),
    path("customers/<int:customer_id>/", api.CustomerDetailView.as_view(), name="customer-detail"),
    path("campaigns/", api.CampaignListView.as_view(), name="campaign-list"),
    path("campaigns/<int:campaign_id>/", api.CampaignDetailView.as_view(), name="campaign-detail"),
    path("contractors/", api.ContractorListView.as_view(), name="contractor-list"),
    path("contractors/<int:contractor_id>/", api.ContractorDetailView.as_view(), name="contractor-detail"),
]
