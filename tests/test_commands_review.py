"""Management commands and settings met with bad input: one readable line and a non-zero
exit, nothing lost."""

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from leads.models import Lead
from tests.factories import CampaignFactory


def _import(*args: object) -> str:
    out = io.StringIO()
    call_command("import_leads", *[str(a) for a in args], "--no-progress", stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_an_error_report_path_that_is_a_directory_stops_the_import_before_any_row(tmp_path: Path) -> None:
    campaign = CampaignFactory()
    path = tmp_path / "leads.csv"
    path.write_text(
        "external_id,customer_id,campaign_id,lead_type\n"
        f"A,{campaign.customer_id},{campaign.pk},live\nB,{campaign.customer_id},{campaign.pk},warm\n"
    )
    folder = tmp_path / "reports"
    folder.mkdir()

    with pytest.raises(CommandError, match="is a directory"):
        _import(path, "--errors", folder)

    assert not Lead.objects.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv", "reports"]


@pytest.mark.django_db
def test_an_error_report_that_cannot_be_moved_in_place_is_kept_and_the_exit_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign = CampaignFactory()
    path = tmp_path / "leads.csv"
    path.write_text(
        "external_id,customer_id,campaign_id,lead_type\n"
        f"A,{campaign.customer_id},{campaign.pk},live\nB,{campaign.customer_id},{campaign.pk},warm\n"
    )

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "replace", refuse)
    out = io.StringIO()
    with pytest.raises(CommandError, match="Cannot move the error report") as failure:
        call_command("import_leads", str(path), "--no-progress", stdout=out, stderr=io.StringIO())

    assert "1 created, 0 updated, 1 rejected" in out.getvalue()
    kept = Path(str(failure.value).rsplit(" it is in ", 1)[1].rstrip("."))
    assert kept.read_text().startswith("row,column,reason")
    assert Lead.objects.filter(external_id="A").exists()


def test_a_directory_given_as_the_file_to_import_is_named_so(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="is a directory"):
        _import(tmp_path)
