"""URI shapes and write options: every entry point rejects the same bad values with the same message."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.model.options import SchemaVariant, WriteDisposition, WriteOptions
from airflow_provider_dicom.model.uris import (
    BigQueryTableUri,
    DicomStoreName,
    GcsUri,
    InvalidUriError,
    is_dicom_store_name,
    is_templated,
)

# -- bq:// ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("bq://my-project.my_dataset.my_table", ("my-project", "my_dataset", "my_table")),
        ("bq://example.com:my-project.ds.t", ("example.com:my-project", "ds", "t")),
        ("bq://project1.DataSet_2.table-with-dash", ("project1", "DataSet_2", "table-with-dash")),
    ],
)
def test_valid_table_uris(uri, parts):
    parsed = BigQueryTableUri.parse(uri)
    assert (parsed.project, parsed.dataset, parsed.table) == parts
    assert str(parsed) == uri
    assert parsed.table_id == ".".join(parts)
    assert parsed.dataset_id == ".".join(parts[:2])


@pytest.mark.parametrize(
    "uri",
    [
        "my-project.ds.t",  # no scheme
        "bigquery://my-project.ds.t",
        "bq://my-project.ds",  # no table
        "bq://my-project.ds.t.extra",
        "bq://My-Project.ds.t",  # project ids are lowercase
        "bq://abc.ds.t",  # project ids are at least 6 characters
        "bq://my-project.d-s.t",  # dataset ids have no dashes
        "bq://my-project..t",
        "bq://my-project.ds.",
        "",
    ],
)
def test_invalid_table_uris_name_the_value(uri):
    with pytest.raises(InvalidUriError) as caught:
        BigQueryTableUri.parse(uri)
    assert repr(uri) in str(caught.value)
    assert "bq://PROJECT.DATASET.TABLE" in str(caught.value)


def test_table_uri_must_be_a_string():
    with pytest.raises(InvalidUriError, match="must be a string"):
        BigQueryTableUri.parse(None)  # type: ignore[arg-type]


def test_table_uri_length_limit_is_the_healthcare_apis():
    dataset = "d" * 1000  # dataset and table ids may each be up to 1024 characters
    table = "t" * (2000 - len(f"bq://my-project.{dataset}."))
    assert BigQueryTableUri.parse(f"bq://my-project.{dataset}.{table}").table == table
    with pytest.raises(InvalidUriError, match="2001 characters long"):
        BigQueryTableUri.parse(f"bq://my-project.{dataset}.{table}x")


def test_invalid_uri_error_is_a_value_error():
    assert issubclass(InvalidUriError, ValueError)


# -- gs:// and store names -----------------------------------------------------------------------


def test_gcs_uris():
    assert GcsUri.parse("gs://my-bucket/dir/filter.txt") == GcsUri("my-bucket", "dir/filter.txt")
    assert GcsUri.parse("gs://my-bucket") == GcsUri("my-bucket", "")
    assert str(GcsUri.parse("gs://my-bucket/a")) == "gs://my-bucket/a"
    for bad in ("s3://bucket/x", "gs://B/x", "gs://a/x", "gs:/bucket/x", "gs://-bucket/x"):
        with pytest.raises(InvalidUriError, match="gs://BUCKET"):
            GcsUri.parse(bad)
    for no_object in ("gs://my-bucket", "gs://my-bucket/", "gs://my-bucket/dir/"):
        with pytest.raises(InvalidUriError, match="gs://BUCKET/OBJECT"):
            GcsUri.parse(no_object, require_object=True)


def test_dicom_store_names():
    name = "projects/p1/locations/us-central1/datasets/d1/dicomStores/s1"
    parsed = DicomStoreName.parse(name)
    assert (parsed.project, parsed.location, parsed.dataset, parsed.store) == ("p1", "us-central1", "d1", "s1")
    assert str(parsed) == name
    assert is_dicom_store_name(name)
    assert not is_dicom_store_name("/data/dicom")
    for bad in (name + "/dicomWeb", "projects/p1/datasets/d1/dicomStores/s1", "projects//locations/l/datasets/d/dicomStores/s"):
        with pytest.raises(InvalidUriError, match=r"projects/PROJECT/locations/LOCATION"):
            DicomStoreName.parse(bad)


def test_templated_values_are_recognised():
    assert is_templated("bq://{{ params.project }}.ds.t")
    assert is_templated("{% if x %}a{% endif %}")
    assert not is_templated("bq://my-project.ds.t")
    assert not is_templated(None)


# -- write options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("WRITE_EMPTY", WriteDisposition.WRITE_EMPTY),
        ("write-empty", WriteDisposition.WRITE_EMPTY),
        ("write_truncate", WriteDisposition.WRITE_TRUNCATE),
        ("Write-Append", WriteDisposition.WRITE_APPEND),
        (" WRITE_APPEND ", WriteDisposition.WRITE_APPEND),
        (WriteDisposition.WRITE_TRUNCATE, WriteDisposition.WRITE_TRUNCATE),
    ],
)
def test_both_disposition_spellings(spelling, expected):
    assert WriteDisposition.parse(spelling) is expected


@pytest.mark.parametrize("bad", ["WRITE_EVERYTHING", "append", "", None, 1])
def test_unknown_disposition_names_the_value_and_the_choices(bad):
    with pytest.raises(ValueError) as caught:
        WriteDisposition.parse(bad)
    assert repr(bad) in str(caught.value)
    assert "write-truncate" in str(caught.value) and "WRITE_APPEND" in str(caught.value)


def test_schema_variants():
    assert SchemaVariant.parse("flattened") is SchemaVariant.FLATTENED
    assert SchemaVariant.parse("JSON") is SchemaVariant.JSON
    assert SchemaVariant.parse("schemaFlattened") is SchemaVariant.FLATTENED
    assert SchemaVariant.parse("schemaJson") is SchemaVariant.JSON
    with pytest.raises(ValueError, match="unknown schema 'flat'"):
        SchemaVariant.parse("flat")


def test_force_and_disposition_together_is_an_error_naming_both():
    with pytest.raises(ValueError) as caught:
        WriteOptions.resolve("WRITE_APPEND", True)
    assert "'WRITE_APPEND'" in str(caught.value) and "True" in str(caught.value)
    with pytest.raises(ValueError):
        WriteOptions.resolve("WRITE_EMPTY", False)


@pytest.mark.parametrize(
    ("disposition", "force", "effective", "fails_on_existing", "request_fields"),
    [
        (None, None, WriteDisposition.WRITE_EMPTY, True, {}),
        (None, False, WriteDisposition.WRITE_EMPTY, True, {"force": False}),
        (None, True, WriteDisposition.WRITE_TRUNCATE, False, {"force": True}),
        ("write-empty", None, WriteDisposition.WRITE_EMPTY, False, {"writeDisposition": "WRITE_EMPTY"}),
        ("WRITE_TRUNCATE", None, WriteDisposition.WRITE_TRUNCATE, False, {"writeDisposition": "WRITE_TRUNCATE"}),
        ("WRITE_APPEND", None, WriteDisposition.WRITE_APPEND, False, {"writeDisposition": "WRITE_APPEND"}),
    ],
)
def test_resolved_rules(disposition, force, effective, fails_on_existing, request_fields):
    options = WriteOptions.resolve(disposition, force)
    assert options.disposition is effective
    # legacy force=False (or nothing) refuses any existing table; WRITE_EMPTY accepts an empty one
    assert options.fails_on_existing_table is fails_on_existing
    assert options.to_bigquery_destination() == request_fields


def test_force_must_be_a_bool():
    with pytest.raises(ValueError, match="force must be True or False, got 'yes'"):
        WriteOptions.resolve(None, "yes")  # type: ignore[arg-type]
