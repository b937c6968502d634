"""Building filter files: UID validation, levels, dedupe, covered lines, rejects, the empty policy,
streaming local writes, query wrapping and parameters, and the server-side route (mocked client:
the BigQuery stand-in accepts extract jobs but writes nothing)."""

from __future__ import annotations

import datetime
from pathlib import Path
from unittest import mock

import pytest

from airflow_provider_dicom.filters.build import (
    EmptyFilterError,
    UnorderedInputError,
    build_from_rows,
    coerce_items,
    iter_lines,
    parse_cli_param,
    query_parameters,
    server_side_sql,
    strip_sql,
    uid_problem,
    wrap_query,
)
from airflow_provider_dicom.filters.files import load_filter

S1, S2 = "1.2.840.1", "1.2.840.2"
SE1, SE2 = "1.2.840.1.1", "1.2.840.1.2"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1.2.840.10008.1.2", None),
        ("0", None),
        ("1.0.3", None),
        ("1." + "2" * 62, None),  # exactly 64
        ("1." + "2" * 63, "longer than 64 characters (65)"),
        ("", "empty"),
        (None, "missing"),
        (12, "not a string (int)"),
        ("1.2.a", "not digits and dots"),
        ("1.2/3", "not digits and dots"),
        (" 1.2", "not digits and dots"),
        ("1..2", "empty component"),
        (".1.2", "empty component"),
        ("1.2.", "empty component"),
        ("1.02", "component with a leading zero"),
        ("01.2", "component with a leading zero"),
    ],
)
def test_uid_validation(value, problem):
    assert uid_problem(value) == problem


def write(tmp_path: Path, items, **kwargs):
    target = tmp_path / "filter.txt"
    kwargs.setdefault("level", None)
    result = build_from_rows(items, str(target), presorted=False, **kwargs)
    return result, (target.read_text() if target.exists() else None)


def test_levels_truncate_deeper_values(tmp_path):
    items = [(S1, SE1, "1.1"), (S1, SE1, "1.2"), (S1, SE2, "2.1"), (S2, SE1, "3.1")]
    result, text = write(tmp_path, items, level="series")
    assert text == f"/studies/{S1}/series/{SE1}\n/studies/{S1}/series/{SE2}\n/studies/{S2}/series/{SE1}\n"
    assert (result.studies, result.series, result.instances, result.lines) == (2, 3, 0, 3)
    result, text = write(tmp_path, items, level="study")
    assert text == f"/studies/{S1}\n/studies/{S2}\n"
    assert (result.studies, result.series, result.instances) == (2, 0, 0)
    result, text = write(tmp_path, items, level="instance")
    assert text.count("\n") == 4 and (result.studies, result.series, result.instances) == (2, 3, 4)


def test_duplicates_and_covered_lines_are_removed_and_counted(tmp_path):
    items = [
        f"/studies/{S1}/series/{SE1}/instances/9.1",
        f"/studies/{S1}",  # covers the line above, whatever the order given
        f"/studies/{S1}/series/{SE2}",
        f"/studies/{S2}/series/{SE1}/instances/9.2",
        f"/studies/{S2}/series/{SE1}/instances/9.2",
        f"/studies/{S2}/series/{SE1}",
        f"/studies/{S2}/series/{SE2}/instances/9.3",
        f"/studies/{S2}/series/{SE2}/instances/9.3",
    ]
    result, text = write(tmp_path, items)
    assert text.splitlines() == [
        f"/studies/{S1}",
        f"/studies/{S2}/series/{SE1}",
        f"/studies/{S2}/series/{SE2}/instances/9.3",
    ]
    assert result.covered == 4  # S1's instance and series, S2/SE1's instance twice
    assert result.duplicates == 1
    assert (result.studies, result.series, result.instances, result.lines) == (2, 2, 1, 3)
    # and the file is one the readers accept, selecting the same
    selected = load_filter(tmp_path / "filter.txt")
    assert selected.accepts(S1, "7.7", "8.8") and not selected.accepts(S2, "7.7", "9.3")


def test_invalid_uids_are_rejected_counted_and_quoted(tmp_path):
    items = [
        (S1, SE1, "1.1"),
        (S1, SE1, "1.01"),
        ("1..2", SE1, "1.1"),
        (S1, "x.y", "1.1"),
        (S1, SE1, None),  # missing at instance level
        ("1." + "3" * 70, SE1, "1.1"),
        "/dicomWeb/studies/1.2",
        42,
    ]
    result, text = write(tmp_path, items, level="instance")
    assert text == f"/studies/{S1}/series/{SE1}/instances/1.1\n"
    assert result.rejected == 7
    assert len(result.rejected_examples) == 5
    joined = " | ".join(result.rejected_examples)
    assert "a 4-character value: SOPInstanceUID component with a leading zero" in joined
    assert "a 4-character value: StudyInstanceUID empty component" in joined
    # Rejected values are described, never quoted: they may be patient data handed over by mistake.
    assert "1.01" not in joined and "1..2" not in joined and "x.y" not in joined


def test_mappings_tuples_bare_uids_and_crlf_text(tmp_path):
    items = coerce_items(f"/studies/{S1}\r\n\r\n{S2}\r\n")
    assert items == [f"/studies/{S1}", S2]
    result, text = write(tmp_path, items)
    assert text == f"/studies/{S1}\n/studies/{S2}\n"
    rows = [{"StudyInstanceUID": S1, "SeriesInstanceUID": SE1}, {"study": S2, "series": SE2}]
    result, text = write(tmp_path, rows)
    assert text == f"/studies/{S1}/series/{SE1}\n/studies/{S2}/series/{SE2}\n"
    # what Jinja renders an XCom list to
    assert coerce_items(str([(S1, SE1, "1.1")])) == [(S1, SE1, "1.1")]
    assert coerce_items('["/studies/1.2"]') == ["/studies/1.2"]
    assert list(iter_lines(["\ufeff/studies/1\r\n", "  \r\n", "/studies/2\n"])) == ["/studies/1", "/studies/2"]


def test_empty_policy(tmp_path):
    with pytest.raises(EmptyFilterError, match=r"selects nothing.*1 rejected: a 4-character value: StudyInstanceUID component with a leading zero"):
        write(tmp_path, ["1.02"], on_empty="fail")
    assert not (tmp_path / "filter.txt").exists()
    result, text = write(tmp_path, [], on_empty="skip")
    assert text is None and not result.written and result.lines == 0
    result, text = write(tmp_path, [], on_empty="write_empty")
    assert text == "" and result.written
    with pytest.raises(ValueError, match="invalid on_empty 'maybe'"):
        write(tmp_path, [], on_empty="maybe")


def test_a_rerun_replaces_the_file(tmp_path):
    write(tmp_path, [S1, S2])
    _, text = write(tmp_path, [S2])
    assert text == f"/studies/{S2}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["filter.txt"]  # no temporary file left


def test_ordered_query_rows_stream_and_disorder_is_an_error(tmp_path):
    rows = [{"study": S1, "series": SE1, "instance": f"1.{i}"} for i in range(1, 4)]
    result = build_from_rows(rows, str(tmp_path / "f"), level="instance")
    assert result.instances == 3
    bad = [{"study": S1, "series": SE1, "instance": "1.1"}, {"study": S2, "series": SE1, "instance": "1.1"},
           {"study": S1, "series": SE2, "instance": "1.1"}]
    with pytest.raises(UnorderedInputError, match=f"study {S1} came back"):
        build_from_rows(bad, str(tmp_path / "g"), level="instance")
    assert not (tmp_path / "g").exists()  # nothing half-written


def test_wrap_query_nests_orders_and_never_formats_values():
    sql = "#standardSQL\nSELECT * FROM `p.d.t` WHERE Modality = @modality;\n"
    assert strip_sql(sql) == "SELECT * FROM `p.d.t` WHERE Modality = @modality"
    wrapped = wrap_query(sql, "series")
    assert wrapped == (
        "SELECT DISTINCT CAST(`StudyInstanceUID` AS STRING) AS study, CAST(`SeriesInstanceUID` AS STRING) AS series "
        "FROM (\nSELECT * FROM `p.d.t` WHERE Modality = @modality\n) ORDER BY study, series ASC NULLS FIRST"
    )
    assert "ORDER BY REPLACE(path, '/', ' ')" in wrap_query("SELECT p AS path FROM x", "instance", path_column="p")
    with pytest.raises(ValueError, match="invalid column name"):
        wrap_query("SELECT 1", "study", uid_columns=("a; DROP", "b", "c"))
    with pytest.raises(ValueError, match="empty"):
        strip_sql(" ; ")


def test_query_parameters_typed_inferred_and_api_dicts():
    params = query_parameters(
        {
            "modality": "CT",
            "n": 3,
            "since": {"type": "DATE", "value": "2024-01-31T00:00:00+00:00"},
            "ids": {"type": "ARRAY<STRING>", "value": ["a", "b"]},
            "parts": ["HEAD", "CHEST"],
        }
    )
    reprs = {p.name: p.to_api_repr() for p in params}
    assert reprs["modality"]["parameterType"] == {"type": "STRING"}
    assert reprs["n"]["parameterValue"] == {"value": "3"}
    assert reprs["since"]["parameterValue"] == {"value": "2024-01-31"}
    assert reprs["ids"]["parameterType"] == {"type": "ARRAY", "arrayType": {"type": "STRING"}}
    assert reprs["parts"]["parameterValue"] == {"arrayValues": [{"value": "HEAD"}, {"value": "CHEST"}]}
    api = query_parameters([{"name": "x", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "5"}}])
    assert api[0].value == 5
    with pytest.raises(ValueError, match="'since'.*not a valid DATE"):
        query_parameters({"since": {"type": "DATE", "value": "yesterday"}})
    with pytest.raises(ValueError, match="invalid query parameter name"):
        query_parameters({"bad name": 1})
    assert query_parameters({"d": datetime.date(2024, 1, 2)})[0].type_ == "DATE"


def test_cli_param_syntax():
    assert parse_cli_param("modality=STRING:CT") == ("modality", {"type": "STRING", "value": "CT"})
    assert parse_cli_param("since=date:2024-01-01") == ("since", {"type": "DATE", "value": "2024-01-01"})
    assert parse_cli_param("ids=ARRAY<STRING>:a,b") == ("ids", {"type": "ARRAY<STRING>", "value": ["a", "b"]})
    assert parse_cli_param("url=http://x") == ("url", {"type": "STRING", "value": "http://x"})
    with pytest.raises(ValueError, match="name=TYPE:value"):
        parse_cli_param("novalue")


def test_server_side_sql_validates_in_bigquery():
    paths, counts = server_side_sql("p.d.rows", "series")
    assert "REGEXP_CONTAINS(series" in paths and "instance" not in paths
    assert "CONCAT('/studies/', study, '/series/', series)" in paths
    assert "COUNTIF(NOT" in counts


class _Rows(list):
    total_rows: int


def _rows(values, total=None):
    rows = _Rows(values)
    rows.total_rows = len(values) if total is None else total
    return rows


def test_server_side_route_queries_counts_and_extracts(tmp_path):
    from airflow_provider_dicom.filters.query import build_from_query, staging_table_id

    client = mock.Mock()
    first = mock.Mock(referenced_tables=[])
    first.result.return_value = _rows([], total=2_000_000)
    counts = mock.Mock()
    counts.result.return_value = iter([{"accepted": 1_999_990, "rejected": 10, "studies": 50, "series": 700}])
    paths = mock.Mock()
    paths.result.return_value = _rows([], total=1_999_000)
    client.query.side_effect = [first, counts, paths]
    result = build_from_query(
        client, "SELECT * FROM `p.d.t`", "gs://b/f.txt", level="instance",
        threshold=1_000_000, staging_dataset="p.staging",
    )
    assert result.route == "server" and result.written
    assert (result.lines, result.instances, result.studies, result.series, result.rejected) == (
        1_999_000, 1_999_000, 50, 700, 10)
    first_config = client.query.call_args_list[0].kwargs["job_config"]
    assert first_config.destination.table_id == staging_table_id("p.staging", "gs://b/f.txt", "rows").split(".")[-1]
    extract_args = client.extract_table.call_args
    assert extract_args.args == (staging_table_id("p.staging", "gs://b/f.txt", "paths"), "gs://b/f.txt")
    config = extract_args.kwargs["job_config"]
    assert config.destination_format == "CSV" and config.print_header is False


def test_below_threshold_or_without_staging_the_worker_streams(tmp_path):
    from airflow_provider_dicom.filters.query import build_from_query

    client = mock.Mock()
    job = mock.Mock(referenced_tables=[])
    job.result.return_value = _rows([{"study": S1}], total=5_000_000)
    client.query.return_value = job
    result = build_from_query(client, "SELECT 1", str(tmp_path / "f"), level="study", threshold=10)
    assert result.route == "worker" and (tmp_path / "f").read_text() == f"/studies/{S1}\n"
    client.extract_table.assert_not_called()


def test_server_side_empty_result_follows_the_policy():
    from airflow_provider_dicom.filters.query import build_from_query

    def client_with_empty():
        client = mock.Mock()
        first = mock.Mock(referenced_tables=[])
        first.result.return_value = _rows([], total=5)
        counts = mock.Mock()
        counts.result.return_value = iter([{"accepted": 0, "rejected": 5, "studies": 0, "series": 0}])
        paths = mock.Mock()
        paths.result.return_value = _rows([], total=0)
        client.query.side_effect = [first, counts, paths]
        return client

    client = client_with_empty()
    with pytest.raises(EmptyFilterError, match="5 rows with an invalid"):
        build_from_query(client, "SELECT 1", "gs://b/f", level="study", threshold=1, staging_dataset="p.s")
    client.extract_table.assert_not_called()
    client = client_with_empty()
    result = build_from_query(client, "SELECT 1", "gs://b/f", level="study", threshold=1, staging_dataset="p.s",
                              on_empty="write_empty")
    assert result.written and result.lines == 0
    client.extract_table.assert_called_once()


def test_path_rows_in_the_order_the_wrapped_query_returns(tmp_path):
    # Study 1.2 and study 1.2.3: in plain string order 1.2.3's lines fall between 1.2's.
    paths = ["/studies/1.2", "/studies/1.2/series/5.6", "/studies/1.2.3/series/7.8/instances/9",
             "/studies/1.2.3/series/7.8/instances/9", "/studies/1.2.3/series/7.8/instances/10"]
    ordered = sorted(paths, key=lambda p: p.replace("/", " "))  # ORDER BY REPLACE(path, '/', ' ')
    result = build_from_rows(({"path": p} for p in ordered), str(tmp_path / "f"), level=None, path_column="path")
    assert (tmp_path / "f").read_text().splitlines() == [
        "/studies/1.2", "/studies/1.2.3/series/7.8/instances/10", "/studies/1.2.3/series/7.8/instances/9"
    ]
    assert (result.covered, result.duplicates, result.studies, result.instances) == (1, 1, 2, 2)
    with pytest.raises(UnorderedInputError):
        build_from_rows(({"path": p} for p in sorted(paths)), str(tmp_path / "g"), level=None, path_column="path")
