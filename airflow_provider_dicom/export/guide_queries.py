"""The two example queries of Google's "Exporting DICOM metadata to BigQuery" guide.

They are the acceptance test of "the same table": a user who exported with the Cloud Healthcare
API runs these on the result, so they must run unchanged on ours. Only the table name (and, for
the patient search, the PatientID literal) is substituted; the rest is the guide's text.
Source: https://cloud.google.com/healthcare-api/docs/how-tos/dicom-export-bigquery, section
"Querying and analyzing DICOM data in BigQuery".
"""

from __future__ import annotations

from airflow_provider_dicom.model.uris import BigQueryTableUri

# "Searching across metadata": DICOMweb paths of one patient's instances.
PATIENT_SEARCH = """#standardSQL
SELECT CONCAT('/dicomWeb/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, '/instances/', SOPInstanceUID) as DICOMwebPath
FROM `{table}`
WHERE PatientID = {patient_id};"""

# "Querying for the latest studies": the 10 latest studies with their instance counts.
LATEST_STUDIES = """#standardSQL
SELECT
  MIN(CONCAT(StudyDate, ' ', StudyTime)) as StudyDateTime, MIN(PatientID) as PatientID, StudyInstanceUID, COUNT(*) as InstanceCount
FROM
 `{table}` AS dicom
GROUP BY StudyInstanceUID
ORDER BY StudyDateTime DESC
LIMIT 10;"""

GUIDE_PATIENT_ID = "19045"  # the PatientID the guide searches for


def _table_id(table: str | BigQueryTableUri) -> str:
    if isinstance(table, BigQueryTableUri):
        return table.table_id
    if table.startswith("bq://"):
        return BigQueryTableUri.parse(table).table_id
    return BigQueryTableUri.parse(f"bq://{table}").table_id


def _string_literal(value: str) -> str:
    """A GoogleSQL string literal: the value can never end the literal or the statement."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def patient_search_sql(table: str | BigQueryTableUri, patient_id: str = GUIDE_PATIENT_ID) -> str:
    """The guide's PatientID search against `table` (`bq://P.D.T` or `P.D.T`)."""
    return PATIENT_SEARCH.format(table=_table_id(table), patient_id=_string_literal(patient_id))


def latest_studies_sql(table: str | BigQueryTableUri) -> str:
    """The guide's latest-studies query against `table` (`bq://P.D.T` or `P.D.T`)."""
    return LATEST_STUDIES.format(table=_table_id(table))
