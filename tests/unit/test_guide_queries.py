"""The guide's queries are Google's text with only the table (and PatientID literal) substituted."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.export import guide_queries
from airflow_provider_dicom.model.uris import InvalidUriError


def test_table_may_be_given_as_bq_uri_or_table_id():
    for table in ("bq://my-project.ds.t", "my-project.ds.t"):
        assert "FROM `my-project.ds.t`" in guide_queries.patient_search_sql(table)
        assert "`my-project.ds.t` AS dicom" in guide_queries.latest_studies_sql(table)


def test_bad_table_is_refused():
    with pytest.raises(InvalidUriError):
        guide_queries.latest_studies_sql("ds.t")
    with pytest.raises(InvalidUriError):
        guide_queries.patient_search_sql("bq://my-project.ds.t`; DROP TABLE x; --")


def test_only_the_table_and_patient_change():
    sql = guide_queries.latest_studies_sql("bq://my-project.ds.t")
    assert sql == guide_queries.LATEST_STUDIES.replace("{table}", "my-project.ds.t")
    assert "MIN(CONCAT(StudyDate, ' ', StudyTime)) as StudyDateTime" in sql
    assert "ORDER BY StudyDateTime DESC\nLIMIT 10;" in sql
    default = guide_queries.patient_search_sql("bq://my-project.ds.t")
    assert default.endswith("WHERE PatientID = '19045';")


@pytest.mark.parametrize(
    ("patient_id", "literal"),
    [("O'Brien", r"'O\'Brien'"), ("a\\b", r"'a\\b'"), ("x\ny", r"'x\ny'"), ("' OR 1=1 --", r"'\' OR 1=1 --'")],
)
def test_patient_id_cannot_escape_its_literal(patient_id, literal):
    assert guide_queries.patient_search_sql("bq://my-project.ds.t", patient_id).endswith(f"WHERE PatientID = {literal};")
