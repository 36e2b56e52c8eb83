"""Files of past leads: a mapped "converted" column stores leads closed with their outcome."""

import datetime as dt
from pathlib import Path

import pytest
from openpyxl import Workbook

from leads.importers import LeadMapping, MappingError, parse_outcome, plan_columns
from leads.models import CloseReason, Lead, QueueStatus
from leads.services import import_leads, preview_import
from prioritization.services import claim_next_lead
from tests.factories import ContractorFactory
from tests.prioritization.conftest import add_lead

HEADER = "Prospect ID,Lead Source,City,Converted,Tags\n"
HISTORY = LeadMapping.from_json(
    {
        "columns": {
            "external_id": "Prospect ID",
            "source": "Lead Source",
            "city": "City",
            "converted": "Converted",
        },
        "constants": {"lead_type": "live"},
        "empty_values": ["Select"],
    }
)


def _csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "history.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("0", False),
        ("TRUE", True),
        ("false", False),
        (" Yes ", True),
        ("NO", False),
        (1.0, True),
        (0, False),
        (True, True),
    ],
)
def test_an_outcome_reads_one_zero_true_false_yes_no_in_any_case(raw: object, expected: bool) -> None:
    assert parse_outcome(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", 0.5, "", None])
def test_anything_else_is_not_an_outcome(raw: object) -> None:
    with pytest.raises(ValueError, match="1/0, true/false or yes/no"):
        parse_outcome(raw)


def test_a_converted_header_alone_does_not_turn_a_file_into_history() -> None:
    header = ["external_id", "customer_id", "campaign_id", "lead_type", "converted"]
    plan = plan_columns(header, LeadMapping(), given={})
    assert "converted" not in plan.positions
    mapped = plan_columns(header, LeadMapping.from_json({"columns": {"converted": "converted"}}), given={})
    assert mapped.positions["converted"] == 4


def test_a_mapping_may_name_the_outcome_but_no_unknown_field() -> None:
    with pytest.raises(MappingError, match=r"unknown lead fields: outcome .*converted"):
        LeadMapping.from_json({"columns": {"outcome": "Converted"}})


@pytest.mark.django_db
def test_past_leads_are_stored_closed_with_their_outcome_and_never_handed_out(tmp_path, customer, campaign):
    path = _csv(tmp_path, "p-1,Google,Pune,1,Will revert\np-2,Referral,Select,0,Ringing\n")

    summary = import_leads(path, mapping=HISTORY, customer_id=customer.pk, campaign_id=campaign.pk)

    assert (summary.created, summary.rejected) == (2, 0)
    leads = {lead.external_id: lead for lead in Lead.objects.all()}
    assert leads["p-1"].status == QueueStatus.CLOSED
    assert leads["p-1"].closed_reason == CloseReason.PAST_CONVERTED
    assert leads["p-2"].closed_reason == CloseReason.PAST_NOT_CONVERTED
    assert leads["p-2"].city == ""  # "Select" means empty
    assert leads["p-1"].closed_at == leads["p-1"].created_at
    assert all(lead.attempt_count == 0 and lead.holder_id is None for lead in leads.values())
    contractor = ContractorFactory(campaigns=[campaign])
    assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk]) is None


@pytest.mark.django_db
def test_a_bad_outcome_rejects_its_row_with_the_column_name_and_keeps_the_others(
    tmp_path, customer, campaign
):
    path = _csv(tmp_path, "p-1,Google,Pune,1,\np-2,Google,Pune,maybe,\np-3,Google,Pune,,\n")

    summary = import_leads(path, mapping=HISTORY, customer_id=customer.pk, campaign_id=campaign.pk)

    assert (summary.created, summary.rejected) == (1, 2)
    assert [(e.row, e.column) for e in summary.errors] == [(3, "Converted"), (4, "Converted")]
    assert "'maybe' is not an outcome" in summary.errors[0].reason
    assert "required in a file of past outcomes" in summary.errors[1].reason


@pytest.mark.django_db
def test_the_preview_shows_outcome_errors_before_anything_is_written(tmp_path, customer, campaign):
    path = _csv(tmp_path, "p-1,Google,Pune,yes,\np-2,Google,Pune,perhaps,\n")

    preview = preview_import(path, mapping=HISTORY, customer_id=customer.pk, campaign_id=campaign.pk)

    assert (preview.valid_rows, preview.rejected_rows) == (1, 1)
    assert preview.errors[0].column == "Converted"
    assert not Lead.objects.exists()


@pytest.mark.django_db
def test_importing_history_again_updates_the_outcome_without_duplicates(tmp_path, customer, campaign):
    for outcome in ("0", "1"):
        path = _csv(tmp_path, f"p-1,Google,Pune,{outcome},\n")
        import_leads(path, mapping=HISTORY, customer_id=customer.pk, campaign_id=campaign.pk)

    lead = Lead.objects.get()
    assert lead.closed_reason == CloseReason.PAST_CONVERTED


@pytest.mark.django_db
def test_an_outcome_closes_a_queued_lead_but_never_one_the_engine_closed(tmp_path, customer, campaign):
    queued = add_lead(campaign, external_id="p-1")
    converted = add_lead(campaign, external_id="p-2")
    Lead.objects.filter(pk=converted.pk).update(
        status=QueueStatus.CLOSED, closed_reason=CloseReason.CONVERTED, closed_at=converted.created_at
    )

    summary = import_leads(
        _csv(tmp_path, "p-1,Google,Pune,0,\np-2,Google,Pune,0,\n"),
        mapping=HISTORY,
        customer_id=customer.pk,
        campaign_id=campaign.pk,
    )

    assert summary.updated == 2
    queued.refresh_from_db()
    converted.refresh_from_db()
    assert (queued.status, queued.closed_reason) == (QueueStatus.CLOSED, CloseReason.PAST_NOT_CONVERTED)
    assert queued.closed_at is not None
    assert converted.closed_reason == CloseReason.CONVERTED


@pytest.mark.django_db
def test_an_xlsx_of_past_leads_with_true_false_outcomes_imports(tmp_path, customer, campaign):
    book = Workbook()
    sheet = book.active
    sheet.append(["Prospect ID", "Lead Source", "City", "Converted", "created_at"])
    sheet.append(["x-1", "Google", "Pune", True, dt.datetime(2026, 1, 5, 9, 0)])
    sheet.append(["x-2", "Google", "Pune", "FALSE", dt.datetime(2026, 1, 6, 9, 0)])
    path = tmp_path / "history.xlsx"
    book.save(path)

    summary = import_leads(path, mapping=HISTORY, customer_id=customer.pk, campaign_id=campaign.pk)

    assert (summary.created, summary.rejected) == (2, 0), summary.errors
    reasons = dict(Lead.objects.values_list("external_id", "closed_reason"))
    assert reasons == {"x-1": CloseReason.PAST_CONVERTED, "x-2": CloseReason.PAST_NOT_CONVERTED}
    assert Lead.objects.get(external_id="x-1").closed_at == dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_a_file_without_an_outcome_mapping_still_queues_its_leads(tmp_path, customer, campaign):
    path = _csv(tmp_path, "p-1,Google,Pune,1,\n")
    mapping = LeadMapping.from_json(
        {"columns": {"external_id": "Prospect ID"}, "constants": {"lead_type": "live"}}
    )

    import_leads(path, mapping=mapping, customer_id=customer.pk, campaign_id=campaign.pk)

    assert Lead.objects.get().status == QueueStatus.READY
