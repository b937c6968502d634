"""Filter files: the exact format the Cloud Healthcare API reads, and what a filter selects."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.filters.files import FilterFileError, FilterSet, ResourcePath, load_filter

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOP = "1.2.826.0.1.3680043.8.498.3"


def test_all_three_levels_parse():
    filters = FilterSet.parse(
        f"/studies/{STUDY}\n/studies/9.9/series/{SERIES}\n/studies/8.8/series/7.7/instances/{SOP}\n"
    )
    assert filters.paths == (
        ResourcePath(STUDY),
        ResourcePath("9.9", SERIES),
        ResourcePath("8.8", "7.7", SOP),
    )
    assert [p.level for p in filters] == ["study", "series", "instance"]


def test_crlf_lines_blank_lines_and_surrounding_space_are_accepted():
    text = f"\r\n/studies/{STUDY}\r\n\r\n   \r\n  /studies/2.2/series/3.3  \r\n\n"
    assert FilterSet.parse(text).paths == (ResourcePath(STUDY), ResourcePath("2.2", "3.3"))


def test_bytes_with_byte_order_mark_are_accepted():
    assert FilterSet.parse(f"\ufeff/studies/{STUDY}\n".encode()).paths == (ResourcePath(STUDY),)


def test_a_study_line_selects_every_series_and_instance_of_that_study_only():
    filters = FilterSet.parse(f"/studies/{STUDY}")
    assert filters.accepts(STUDY, SERIES, SOP)
    assert filters.accepts(STUDY, "any.series", "any.instance")
    assert not filters.accepts("1.2.826.0.1.3680043.8.498.10", SERIES, SOP)  # a longer UID is another study


def test_a_series_line_selects_its_instances_but_not_sibling_series():
    filters = FilterSet.parse(f"/studies/{STUDY}/series/{SERIES}")
    assert filters.accepts(STUDY, SERIES, SOP)
    assert filters.accepts(STUDY, SERIES, "another.instance")
    assert not filters.accepts(STUDY, "sibling.series", SOP)
    # the same series UID under another study is not the same series
    assert not filters.accepts("other.study", SERIES, SOP)


def test_an_instance_line_selects_exactly_that_instance():
    filters = FilterSet.parse(f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}")
    assert filters.accepts(STUDY, SERIES, SOP)
    assert not filters.accepts(STUDY, SERIES, SOP + "1")
    assert not filters.accepts(STUDY, "other.series", SOP)


def test_instances_without_uids_are_never_selected():
    filters = FilterSet.parse(f"/studies/{STUDY}")
    assert not filters.accepts(None, SERIES, SOP)
    assert not FilterSet.parse(f"/studies/{STUDY}/series/{SERIES}").accepts(STUDY, None, SOP)


def test_an_empty_filter_selects_nothing():
    filters = FilterSet.parse("\n\r\n")
    assert len(filters) == 0
    assert not filters.accepts(STUDY, SERIES, SOP)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"studies/{STUDY}", "no leading slash"),
        (f"/study/{STUDY}", "wrong keyword"),
        (f"/studies/{STUDY}/", "trailing slash"),
        ("/studies/", "empty UID"),
        (f"/studies/{STUDY}/series", "series without UID"),
        (f"/studies/{STUDY}/instances/{SOP}", "instance without series"),
        (f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1", "frames are not resources"),
        (f"/studies/{STUDY} /series/{SERIES}", "space inside"),
        (f"/STUDIES/{STUDY}", "keywords are lowercase"),
        (f"{STUDY}", "bare UID"),
        (f"gs://bucket/studies/{STUDY}", "URI instead of path"),
    ],
)
def test_a_bad_line_is_an_error_naming_its_number_and_text(line, why):
    text = f"/studies/{STUDY}\r\n\r\n{line}\r\n/studies/4.4\r\n"
    with pytest.raises(FilterFileError) as caught:
        FilterSet.parse(text, source="filter file f.txt")
    message = str(caught.value)
    assert "filter file f.txt, line 3:" in message, why
    assert repr(line.strip()) in message, why


def test_dicomweb_prefix_gets_a_hint():
    with pytest.raises(FilterFileError, match=r"line 1: .*drop the /dicomWeb prefix"):
        FilterSet.parse(f"/dicomWeb/studies/{STUDY}")


def test_a_very_long_bad_line_is_shortened_in_the_message():
    with pytest.raises(FilterFileError) as caught:
        FilterSet.parse("x" * 10_000)
    assert len(str(caught.value)) < 1_000


def test_not_utf8_is_an_error():
    with pytest.raises(FilterFileError, match="not UTF-8"):
        FilterSet.parse(b"/studies/\xff\xfe")


def test_duplicates_are_dropped_and_format_round_trips():
    text = f"/studies/{STUDY}\r\n/studies/2.2/series/3.3\n/studies/{STUDY}\n"
    filters = FilterSet.parse(text)
    assert len(filters) == 2
    assert filters.format() == f"/studies/{STUDY}\n/studies/2.2/series/3.3\n"
    assert FilterSet.parse(filters.format()) == filters


def test_resource_path_str_is_the_line():
    assert str(ResourcePath(STUDY, SERIES, SOP)) == f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    with pytest.raises(ValueError):
        ResourcePath(STUDY, None, SOP)
    with pytest.raises(ValueError):
        ResourcePath("a/b")


def test_load_from_local_path(tmp_path):
    path = tmp_path / "filter.txt"
    path.write_bytes(f"/studies/{STUDY}\r\n".encode())
    assert load_filter(path).paths == (ResourcePath(STUDY),)
    assert load_filter(str(path)).paths == (ResourcePath(STUDY),)


def test_bad_line_in_a_local_file_names_the_file(tmp_path):
    path = tmp_path / "filter.txt"
    path.write_text(f"/studies/{STUDY}\n/studies/{STUDY}/oops\n")
    with pytest.raises(FilterFileError, match=rf"filter file {path}, line 2: '/studies/{STUDY}/oops'"):
        load_filter(path)


def test_missing_local_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_filter(missing)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_filter(tmp_path)


def test_a_gs_uri_without_object_is_refused_before_any_call():
    with pytest.raises(ValueError, match="gs://BUCKET/OBJECT"):
        load_filter("gs://bucket-name/", storage_client=object())
