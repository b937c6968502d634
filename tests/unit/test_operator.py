"""DicomExportToBigQueryOperator: argument validation at construction and after rendering, its
templated fields, its extra link, and that importing it stays cheap for DAG parsing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_dicom.links.bigquery import DicomBigQueryTableLink
from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

STORE = "projects/my-project/locations/us-central1/datasets/imaging/dicomStores/ct"
GOOD = {"task_id": "export", "source": "/data/dicom", "destination_table_uri": "bq://my-project.dicom.instances"}


def make(**overrides):
    return DicomExportToBigQueryOperator(**{**GOOD, **overrides})


def test_good_arguments_construct():
    op = make(write_disposition="write-append", filter_config="gs://bucket/filters/subset.txt", schema="json")
    assert op.write_disposition == "write-append"
    assert op.max_failed_instances == 0
    assert op.gcp_conn_id == "google_cloud_default"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"destination_table_uri": "bq://my-project.dicom"}, "bq://my-project.dicom"),
        ({"destination_table_uri": "bigquery://my-project.dicom.t"}, "bigquery://my-project.dicom.t"),
        ({"destination_table_uri": "my-project.dicom.instances"}, "my-project.dicom.instances"),
        ({"destination_table_uri": "bq://My_Project.dicom.t"}, "bq://My_Project.dicom.t"),
        ({"write_disposition": "WRITE_SOMETIMES"}, "WRITE_SOMETIMES"),
        ({"write_disposition": "WRITE_APPEND", "force": True}, "WRITE_APPEND"),
        ({"write_disposition": "write-empty", "force": False}, "write-empty"),
        ({"force": "yes"}, "yes"),
        ({"schema": "xml"}, "xml"),
        ({"filter_config": "ftp://host/filter.txt"}, "ftp://host/filter.txt"),
        ({"filter_config": "gs://bucket/"}, "gs://bucket/"),
        ({"filter_config": ""}, "''"),
        ({"source": ""}, "''"),
        ({"source": "ftp://pacs/dicom"}, "ftp://pacs/dicom"),
        ({"source": "projects/p/locations/l/datasets/d"}, "projects/p/locations/l/datasets/d"),
        ({"source": "gs://Bad_Bucket!"}, "gs://Bad_Bucket!"),
        ({"gcp_conn_id": ""}, "gcp_conn_id"),
        ({"project_id": " spaced "}, "' spaced '"),
        ({"impersonation_chain": []}, "impersonation_chain"),
        ({"impersonation_chain": ["sa@p.iam.gserviceaccount.com", 3]}, "impersonation_chain"),
        ({"max_failed_instances": -1}, "-1"),
        ({"max_failed_instances": True}, "True"),
        ({"max_failed_instances": "lots"}, "lots"),
    ],
)
def test_bad_argument_fails_at_construction_naming_the_value(overrides, named):
    with pytest.raises(ValueError) as excinfo:
        make(**overrides)
    assert named in str(excinfo.value)


def test_both_force_and_disposition_is_an_error_even_when_the_disposition_is_templated():
    with pytest.raises(ValueError, match=r"either write_disposition .*\{\{ params.disposition \}\}.* or force"):
        make(write_disposition="{{ params.disposition }}", force=True)


@pytest.mark.parametrize("source", ["gs://bucket/dicom/", "https://pacs.example.org/dicom-web"])
def test_remote_sources_are_accepted_at_construction(source):
    assert make(source=source).source == source


def test_dicomweb_conn_id_is_only_for_a_dicomweb_source():
    assert make(source="https://pacs.example.org/dicom-web", dicomweb_conn_id="pacs").dicomweb_conn_id == "pacs"
    with pytest.raises(ValueError, match="dicomweb_conn_id='pacs' is for a DICOMweb source"):
        make(source="gs://bucket/dicom", dicomweb_conn_id="pacs")
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        make(source="gs://bucket/dicom", max_concurrent_requests=0)


def test_dicomweb_url_with_credentials_fails_at_construction_without_echoing_them():
    with pytest.raises(ValueError, match="dicomweb_conn_id") as excinfo:
        make(source="https://user:s3cret@pacs.example.org/dicom-web")
    assert "s3cret" not in str(excinfo.value)


def test_file_uri_source_is_a_folder():
    assert make(source="file:///data/dicom").source == "file:///data/dicom"
    with pytest.raises(ValueError, match="file://data"):
        make(source="file://data/dicom")


def test_every_id_uri_and_connection_field_is_templated():
    assert set(DicomExportToBigQueryOperator.template_fields) >= {
        "source",
        "destination_table_uri",
        "write_disposition",
        "filter_config",
        "schema",
        "project_id",
        "location",
        "gcp_conn_id",
        "impersonation_chain",
        "max_failed_instances",
    }


def test_templated_values_are_not_validated_at_construction():
    op = make(
        source="{{ params.folder }}",
        destination_table_uri="bq://{{ params.project }}.dicom.{{ params.table }}",
        write_disposition="{{ params.disposition }}",
        schema="{{ params.schema }}",
        filter_config="{{ params.filter }}",
        gcp_conn_id="{{ params.conn }}",
    )
    assert op.destination_table_uri == "bq://{{ params.project }}.dicom.{{ params.table }}"


@pytest.mark.parametrize(("rendered", "expected"), [("3", 3), ("0", 0), ("None", None), ("", None), (7, 7)])
def test_max_failed_instances_accepts_what_a_template_renders(rendered, expected):
    from airflow_provider_dicom.model.arguments import parse_max_failed_instances

    op = make(max_failed_instances="{{ params.tolerated }}")
    _rendered(op, tolerated=rendered)
    assert parse_max_failed_instances(op.max_failed_instances) == expected


def _rendered(op, **params):
    op.render_template_fields({"params": params})
    return op


@pytest.mark.parametrize(
    ("params", "error", "named"),
    [
        ({"project": "Bad_Project", "table": "t", "disposition": "WRITE_APPEND"}, ValueError, "bq://Bad_Project.dicom.t"),
        ({"project": "my-project", "table": "t", "disposition": "sometimes"}, ValueError, "sometimes"),
        ({"project": "my-project", "table": "t", "disposition": "write-empty", "folder": STORE + "/x"},
         ValueError, STORE + "/x"),
    ],
)
def test_templated_values_are_validated_after_rendering(params, error, named):
    op = make(
        source="{{ params.folder | default('/data/dicom') }}",
        destination_table_uri="bq://{{ params.project }}.dicom.{{ params.table }}",
        write_disposition="{{ params.disposition }}",
    )
    _rendered(op, **params)
    # execute() validates the rendered values before it imports or connects to anything, and
    # fails the task without retries: a wrong rendered value stays wrong.
    with pytest.raises(AirflowFailException) as excinfo:
        op.execute({})
    assert isinstance(excinfo.value.__cause__, error)
    assert named in str(excinfo.value)


def test_bigquery_table_link_points_at_the_rendered_table():
    op = make(destination_table_uri="bq://{{ params.project }}.dicom.{{ params.table }}")
    link = DicomBigQueryTableLink()
    assert link.get_link(op, ti_key=None) == ""  # not rendered: no link rather than a wrong one
    _rendered(op, project="my-project", table="ct instances")
    url = link.get_link(op, ti_key=None)
    assert url.startswith("https://console.cloud.google.com/bigquery?")
    assert "project=my-project" in url and "d=dicom" in url and "t=ct+instances" in url
    assert DicomExportToBigQueryOperator.operator_extra_links[0].name == "BigQuery Table"


def test_importing_the_operator_does_not_import_heavy_modules():
    code = (
        "import json, sys\n"
        "import airflow_provider_dicom.operators.export\n"
        "import airflow_provider_dicom.links.bigquery, airflow_provider_dicom.model.sources\n"
        "heavy = ('pydicom', 'google.cloud.bigquery', 'google.cloud.storage', 'googleapiclient',\n"
        "         'airflow.providers.google.cloud.hooks')\n"
        "print(json.dumps(sorted({m for m in sys.modules if m.startswith(heavy)})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []


@pytest.mark.parametrize("bad", [0, -2, "many", True])
def test_bad_process_count_fails_at_construction_naming_it(bad):
    from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

    with pytest.raises(ValueError, match="processes"):
        DicomExportToBigQueryOperator(
            task_id="t", source="/data", destination_table_uri="bq://my-project.d.t", processes=bad
        )


def test_execute_parses_the_request_once(monkeypatch, tmp_path):
    """The operator parses its arguments to choose the route; the export service takes that
    parsed request rather than parsing (and validating) the same arguments again."""
    from airflow_provider_dicom.export import service
    from airflow_provider_dicom.model import request as request_module

    calls = []
    real = request_module.parse_export_request

    def counting(**kwargs):
        calls.append(kwargs["skip_templated"])
        return real(**kwargs)

    class Reached(Exception):
        pass

    def stop(export, *args, **kwargs):
        assert export.source.display == f"local folder {tmp_path}" and str(export.table) == "bq://local-dicom.d.t"
        raise Reached

    op = DicomExportToBigQueryOperator(
        task_id="export", source=str(tmp_path), destination_table_uri="bq://local-dicom.d.t"
    )
    for module in (request_module, service):
        monkeypatch.setattr(module, "parse_export_request", counting)
    monkeypatch.setattr("airflow_provider_dicom.operators.export.parse_export_request", counting, raising=False)
    monkeypatch.setattr(service, "run_bigquery_export", stop)
    with pytest.raises(Reached):
        op.execute({"ti": None})
    assert calls == [False]
