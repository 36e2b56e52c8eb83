"""The demo data `make run` loads: from the public files when present, synthetic otherwise."""

import datetime as dt
import io

import pytest
import time_machine
from django.core.management import call_command

from leads.models import Campaign, Contractor, Customer, Lead

pytestmark = pytest.mark.django_db


def load(settings, data_dir) -> None:
    settings.LEADRANK_DATA_DIR = str(data_dir)
    call_command("load_demo_data", stdout=io.StringIO())


def test_without_the_data_files_the_demo_is_synthetic_and_loading_it_again_adds_nothing(settings, tmp_path):
    load(settings, tmp_path)
    load(settings, tmp_path)

    assert Customer.objects.count() == 2
    assert Campaign.objects.count() == 3
    assert Contractor.objects.count() == 4
    assert Lead.objects.count() == 500
    assert Lead.objects.filter(external_id__startswith="synthetic-").count() == 500
    assert Lead.objects.filter(lead_type="live").exists()
    assert Lead.objects.filter(lead_type="stale").exists()


def test_loading_again_later_keeps_the_times_of_the_leads_already_stored(settings, tmp_path):
    # make run loads the demo at every start: re-sent as "now minus a while", a lead called
    # since seemed called before it arrived.
    load(settings, tmp_path)
    before = dict(Lead.objects.values_list("external_id", "created_at"))
    activity = dict(Lead.objects.values_list("external_id", "last_activity"))

    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)):
        load(settings, tmp_path)

    assert dict(Lead.objects.values_list("external_id", "created_at")) == before
    assert dict(Lead.objects.values_list("external_id", "last_activity")) == activity


def test_the_public_files_give_the_leads_their_ids_and_values(settings, tmp_path):
    education = tmp_path / "x_education_leads"
    education.mkdir()
    (education / "Leads.csv").write_text(
        "Prospect ID,Lead Source,City,Last Activity\n"
        "P-1,Google,Select,SMS Sent\n"
        "P-2,Reference,Mumbai,Email Opened\n"
    )
    olist = tmp_path / "olist_marketing_funnel"
    olist.mkdir()
    (olist / "olist_marketing_qualified_leads_dataset.csv").write_text("mql_id,origin\nM-1,social\n")

    load(settings, tmp_path)

    assert sorted(Lead.objects.values_list("external_id", flat=True)) == ["M-1", "P-1", "P-2"]
    first = Lead.objects.get(external_id="P-1")
    assert (first.source, first.city, first.stage) == ("Google", "", "SMS Sent")  # "Select" is empty
    assert Lead.objects.get(external_id="M-1").source == "social"


def test_a_data_file_without_the_expected_columns_falls_back_to_synthetic_leads(settings, tmp_path):
    # LEADRANK_DATA_DIR pointing at other files: no KeyError traceback from `make run`.
    education = tmp_path / "x_education_leads"
    education.mkdir()
    (education / "Leads.csv").write_text("id,source\n1,Google\n")
    olist = tmp_path / "olist_marketing_funnel"
    olist.mkdir()
    (olist / "olist_marketing_qualified_leads_dataset.csv").write_bytes(b"\xff\xfe not text")

    load(settings, tmp_path)

    assert Lead.objects.count() == 500
    assert not Lead.objects.exclude(external_id__startswith="synthetic-").exists()
