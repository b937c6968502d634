"""Schema union rules: canonical order, append order for existing tables, conflicts named."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.dicom.schema import Field, SchemaConflictError, TableSchema, merge_fields


def _record(name, *children):
    return Field(name, "RECORD", "REPEATED", tuple(children))


def test_new_columns_take_their_tag_place_in_a_new_table():
    merged = merge_fields([Field("Rows", "INTEGER")], [Field("Modality", "STRING"), Field("OtherElements", "RECORD", "REPEATED", (Field("Tag", "STRING"),))])
    assert [f.name for f in merged] == ["Modality", "Rows", "OtherElements"]


def test_appending_to_an_existing_table_keeps_its_order_at_every_level():
    existing = [Field("Rows", "INTEGER"), _record("ReferencedSeriesSequence", Field("SeriesInstanceUID", "STRING"))]
    incoming = [
        Field("Modality", "STRING"),
        _record("ReferencedSeriesSequence", Field("ReferencedSOPClassUID", "STRING"), Field("SeriesInstanceUID", "STRING")),
    ]
    merged = merge_fields(existing, incoming, keep_order=True)
    assert [f.name for f in merged] == ["Rows", "ReferencedSeriesSequence", "Modality"]
    assert [f.name for f in merged[1].fields] == ["SeriesInstanceUID", "ReferencedSOPClassUID"]


def test_conflicting_types_name_the_column():
    with pytest.raises(SchemaConflictError, match=r"'ReferencedSeriesSequence\.SeriesInstanceUID' is STRING .* INTEGER"):
        merge_fields(
            [_record("ReferencedSeriesSequence", Field("SeriesInstanceUID", "STRING"))],
            [_record("ReferencedSeriesSequence", Field("SeriesInstanceUID", "INTEGER"))],
        )


def test_table_schema_round_trips_through_the_api_representation():
    schema = TableSchema()
    schema.add([Field("Rows", "INTEGER"), _record("Seq", Field("CodeValue", "STRING", "NULLABLE"))])
    again = TableSchema.from_api_repr(schema.to_api_repr())
    assert again.fields == schema.fields
    assert schema.column_count() == 3
    bq = schema.to_bigquery()
    assert [(f.name, f.field_type, f.mode) for f in bq] == [("Rows", "INTEGER", "NULLABLE"), ("Seq", "RECORD", "REPEATED")]


def test_fields_from_another_process_hash_like_local_ones():
    import subprocess
    import sys

    code = (
        "import pickle, sys; from airflow_provider_dicom.dicom.schema import Field; "
        "sys.stdout.buffer.write(pickle.dumps(Field('Seq', 'RECORD', 'REPEATED', (Field('CodeValue', 'STRING'),))))"
    )
    data = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    import pickle

    remote = pickle.loads(data)
    local = Field("Seq", "RECORD", "REPEATED", (Field("CodeValue", "STRING"),))
    assert remote == local and hash(remote) == hash(local)
    assert remote in {local}


def test_json_variant_keeps_googles_column_order():
    from tests.unit.dicom_factory import convert, make_dataset

    schema = TableSchema()
    for _ in range(2):
        schema.add(convert(make_dataset(Modality="CT"), schema="json").fields)
    assert [f.name for f in schema.fields][:4] == ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Metadata"]
