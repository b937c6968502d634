"""Outlets of the export operators: the Asset URIs Airflow's Google provider and OpenLineage use, a
static Asset for a literal destination, an AssetAlias plus a runtime event for a templated one,
explicit outlets respected. (Events recorded by real runs: tests/integration/test_example_dags_run.py.)"""

from __future__ import annotations

from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import DAG, Asset, AssetAlias

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator
from airflow_provider_dicom.operators.filter_file import BuildFilterFileOperator
from airflow_provider_dicom.operators.sharded_export import DicomShardLoadOperator
from airflow_provider_dicom.utils.assets import asset_uri, table_uri_from_asset

STORE = "projects/p/locations/us/datasets/d/dicomStores/s"


def test_asset_uris_are_the_google_providers():
    from airflow.providers.google.assets.bigquery import create_asset

    assert asset_uri("bq://my-project.dicom.instances") == create_asset(
        project_id="my-project", dataset_id="dicom", table_id="instances").uri == "bigquery://my-project/dicom/instances"
    assert asset_uri("gs://bucket/cohorts/x/dicom/") == "gs://bucket/cohorts/x/dicom"
    assert asset_uri("gs://bucket/f.txt") == "gs://bucket/f.txt"
    assert asset_uri("/tmp/f.txt") == asset_uri("file:///tmp/f.txt") == "file:///tmp/f.txt"
    with pytest.raises(ValueError, match="cannot name an asset"):
        asset_uri("relative/f.txt")
    assert table_uri_from_asset("bigquery://my-project/dicom/instances_1") == "bq://my-project.dicom.instances_1"
    with pytest.raises(ValueError, match="not a BigQuery table asset URI"):
        table_uri_from_asset("gs://bucket/x")


def test_default_outlets():
    with DAG("d", schedule=None):
        static = DicomExportToBigQueryOperator(task_id="a", source="/data", destination_table_uri="bq://my-project.d.t")
        templated = DicomExportToBigQueryOperator(task_id="b", source="/data",
                                                  destination_table_uri="bq://my-project.d.t_{{ run_id }}")
        files = DicomExportToGcsOperator(task_id="c", source=STORE, uri_prefix="gs://bucket/dicom/")
        not_waited = DicomExportToGcsOperator(task_id="e", source=STORE, uri_prefix="gs://bucket/x",
                                              wait_for_completion=False)
        explicit = DicomExportToBigQueryOperator(task_id="f", source="/data", destination_table_uri="bq://my-project.d.t",
                                                 outlets=[Asset("mine")])
        filter_file = BuildFilterFileOperator(task_id="g", uids=[], destination="gs://bucket/{{ run_id }}/f.txt")
        load = DicomShardLoadOperator(task_id="h", shards=[], destination_table_uri="bq://my-project.d.t")
    assert static.outlets == [Asset(uri="bigquery://my-project/d/t")]
    assert templated.outlets == [AssetAlias(name="dicom-export/d/b")]
    assert files.outlets == [Asset(uri="gs://bucket/dicom")]
    assert not_waited.outlets == []
    assert explicit.outlets == [Asset("mine")]
    assert filter_file.outlets == [AssetAlias(name="dicom-export/d/g")]
    assert load.outlets == [Asset(uri="bigquery://my-project/d/t")]


def test_a_templated_destination_gets_its_event_after_success():
    with DAG("d", schedule=None):
        task = DicomExportToBigQueryOperator(task_id="b", source="/data",
                                             destination_table_uri="bq://my-project.d.t_{{ run_id }}")
    task.destination_table_uri = "bq://my-project.d.t_run1"  # as rendered
    events = mock.MagicMock()
    task.post_execute({"outlet_events": events})
    events.__getitem__.assert_called_once_with(AssetAlias(name="dicom-export/d/b"))
    events.__getitem__.return_value.add.assert_called_once_with(
        Asset(uri="bigquery://my-project/d/t_run1"), extra={"source": "/data"})
    static = DicomExportToBigQueryOperator(task_id="s", source="/data", destination_table_uri="bq://my-project.d.t")
    events.reset_mock()
    static.post_execute({"outlet_events": events})  # Airflow records a static outlet's event itself
    events.__getitem__.assert_not_called()
