"""Building filter files: from query rows, a table, or UIDs/paths handed over (e.g. from XCom).

Why a module of its own: `filters.py` reads filter files (it must accept the non-conformant UIDs
real archives hold, or an instance stored under one could never be selected again); this module
*writes* them for `dicomStores.export` and our own exports, and there every UID is checked against
DICOM PS3.5 9.1 (digits and dots, at most 64 characters, no empty component, no leading zero in a
multi-digit component), because Google's API refuses a filter with a malformed path and an export
that fails hours later is worse than a task that reports its rejects now.

Memory is bounded by the number of studies and series, never by the number of instances:
- rows must arrive grouped: every line of a study before the next study, its study line (if any)
  first, and each series' lines contiguous. `ORDER BY study, series NULLS FIRST, instance NULLS
  FIRST` (what `wrap_query` adds) gives that, and so does sorting path strings with "/" read as a
  space (plain string order does not: "/" sorts after ".", so /studies/1.2.3 would land between
  the lines of /studies/1.2);
- duplicate instance lines are found within the current series only (a set reset per series);
- a line covered by a broader one (an instance of a listed series, a series of a listed study) is
  found through the sets of listed studies and series;
- input that breaks the grouping (a series or study coming back after another one) raises
  `UnorderedInputError` instead of silently writing duplicates.
The trade-off: a billion-instance archive with millions of series keeps millions of series keys;
that is still two orders of magnitude below keeping the instances, and the server-side route
(BigQuery query + extract job, see `filter_file.py`) keeps nothing at all in the worker.

Nothing heavy is imported here: google-cloud-storage only when a gs:// file is written.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from airflow_provider_dicom.dicom.uid import MAX_UID_LENGTH, UID_REGEX, uid_problem
from airflow_provider_dicom.utils.atomic_write import (
    GCS_CHUNK_SIZE,
    AtomicWriter,
    check_local_path,
    check_local_target,
    local_path,
    open_atomic,
)
from airflow_provider_dicom.utils.errors import DicomProviderError

LEVELS = ("study", "series", "instance")
ON_EMPTY = ("fail", "skip", "write_empty")
REJECT_EXAMPLES = 5  # rejected values quoted back in the result and the log
# The default column names: the Cloud Healthcare export table's.
UID_COLUMNS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_DICT_KEYS = {
    0: ("StudyInstanceUID", "study_uid", "study"),
    1: ("SeriesInstanceUID", "series_uid", "series"),
    2: ("SOPInstanceUID", "sop_uid", "sop_instance_uid", "instance_uid", "instance"),
}


class EmptyFilterError(DicomProviderError, ValueError):
    """The selection is empty and the policy is `fail`."""


class UnorderedInputError(DicomProviderError, ValueError):
    """Rows arrived out of study/series order, so bounded-memory dedupe cannot be trusted."""


def check_level(level: str | None, *, allow_none: bool = False) -> str | None:
    if level is None and allow_none:
        return None
    if not isinstance(level, str) or level.strip().lower() not in LEVELS:
        raise ValueError(f"invalid level {level!r}: expected one of {', '.join(LEVELS)}")
    return level.strip().lower()


def check_on_empty(value: str) -> str:
    text = value.strip().lower().replace("-", "_") if isinstance(value, str) else value
    if text not in ON_EMPTY:
        raise ValueError(f"invalid on_empty {value!r}: expected one of {', '.join(ON_EMPTY)}")
    return text


def _shown(value: object) -> str:
    """How a rejected value is described in logs and XCom: its shape, never its text. Whatever
    failed to be a UID may be a patient ID, a name or a date handed over by mistake."""
    if isinstance(value, str):
        return f"a {len(value)}-character value"
    return f"a {type(value).__name__}"


@dataclass
class BuildResult:
    """What was written: the XCom result of BuildFilterFileOperator and the CLI's report."""

    uri: str
    level: str | None
    lines: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    duplicates: int = 0
    covered: int = 0
    rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    route: str = "worker"
    written: bool = False
    input_tables: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "level": self.level,
            "lines": self.lines,
            "studies": self.studies,
            "series": self.series,
            "instances": self.instances,
            "duplicates": self.duplicates,
            "covered": self.covered,
            "rejected": self.rejected,
            "rejected_examples": list(self.rejected_examples),
            "route": self.route,
            "written": self.written,
            "input_tables": list(self.input_tables),
        }

    def reject(self, value: object, reason: str) -> None:
        self.rejected += 1
        if len(self.rejected_examples) < REJECT_EXAMPLES:
            self.rejected_examples.append(f"{_shown(value)}: {reason}")


Row = tuple[str, "str | None", "str | None"]


class FilterWriter:
    """Validates, dedupes and writes resource paths to a text sink, in bounded memory.

    `open_sink` is called on the first line only, so an empty selection writes nothing unless the
    caller asks for it (`on_empty="write_empty"`).
    """

    def __init__(self, result: BuildResult, open_sink: Any) -> None:
        self.result = result
        self._open_sink = open_sink
        self._sink: AtomicWriter | None = None
        self._study_lines: set[str] = set()
        self._series_lines: set[tuple[str, str]] = set()
        self._seen_series: set[tuple[str, str]] = set()
        self._closed_studies: set[str] = set()
        self._current_study: str | None = None
        self._current_series: tuple[str, str] | None = None
        self._current_instances: set[str] = set()
        self._current_series_written = False
        self._counted_study: str | None = None

    def add(self, study: object, series: object = None, instance: object = None, *, level: str | None) -> None:
        """One selection at `level` (None: as deep as given); rejects are counted, not raised."""
        depth = 3 if instance is not None else 2 if series is not None else 1
        wanted = LEVELS.index(level) + 1 if level is not None else depth
        values = (study, series, instance)
        for index in range(wanted):
            problem = uid_problem(values[index])
            if problem is not None:
                name = UID_COLUMNS[index]
                self.result.reject(values[index], f"{name} {problem}")
                return
        # uid_problem passed each wanted value, so each is a UID string.
        row = cast(Row, (study, series if wanted >= 2 else None, instance if wanted >= 3 else None))
        self._add_valid(row)

    def _add_valid(self, row: Row) -> None:
        study, series, instance = row
        result = self.result
        if study != self._current_study:
            if study in self._closed_studies:
                raise UnorderedInputError(
                    f"study {study} came back after other studies: rows must be ordered by study, series, "
                    "instance (ORDER BY ... NULLS FIRST) for bounded-memory dedupe"
                )
            if self._current_study is not None:
                self._closed_studies.add(self._current_study)
            self._current_study = study
        if series is None:
            if study in self._study_lines:
                result.duplicates += 1
                return
            if self._current_series is not None and self._current_series[0] == study:
                raise UnorderedInputError(
                    f"the study line of {study} came after lines of its series: rows must be ordered "
                    "with the study line first (NULLS FIRST)"
                )
            self._study_lines.add(study)
            self._write(f"/studies/{study}")
            result.studies += 1
            self._counted_study = study
            return
        if study in self._study_lines:
            result.covered += 1
            return
        key = (study, series)
        if key != self._current_series:
            if key in self._seen_series:
                raise UnorderedInputError(
                    f"series {series} of study {study} came back after other series: rows must be ordered "
                    "by study, series, instance"
                )
            self._seen_series.add(key)
            self._current_series = key
            self._current_instances = set()
            self._current_series_written = False
        if instance is None:
            if key in self._series_lines:
                result.duplicates += 1
                return
            if self._current_instances:
                raise UnorderedInputError(
                    f"the series line of {series} came after lines of its instances: rows must be "
                    "ordered with the series line first (NULLS FIRST)"
                )
            self._series_lines.add(key)
            self._write(f"/studies/{study}/series/{series}")
            self._count_series(study)
            return
        if key in self._series_lines:
            result.covered += 1
            return
        if instance in self._current_instances:
            result.duplicates += 1
            return
        self._current_instances.add(instance)
        self._write(f"/studies/{study}/series/{series}/instances/{instance}")
        result.instances += 1
        self._count_series(study)

    def _count_series(self, study: str) -> None:
        # A study is counted once: by its study line, or by the first series written under it
        # (rows are grouped by study, so remembering the last counted study is enough).
        if not self._current_series_written:
            self._current_series_written = True
            self.result.series += 1
            if self._counted_study != study:
                self._counted_study = study
                self.result.studies += 1

    def _write(self, line: str) -> None:
        if self._sink is None:
            self._sink = self._open_sink()
        self._sink.write(line + "\n")
        self.result.lines += 1

    def close(self, *, write_empty: bool) -> None:
        if self._sink is None and write_empty:
            self._sink = self._open_sink()
        if self._sink is not None:
            self._sink.close()
            self.result.written = True

    def abort(self) -> None:
        """Leave the previous file as it was (the upload is cancelled, the temporary file removed)."""
        if self._sink is not None:
            with contextlib.suppress(Exception):
                self._sink.abort()
            self._sink = None


# ---- inputs -------------------------------------------------------------------------------------


class Selection(NamedTuple):
    """One handed-over value's UIDs, not validated yet (`study` is a _NotASelection for a reject)."""

    study: object
    series: object = None
    instance: object = None

    @property
    def depth(self) -> int:
        """1, 2 or 3: how deep the value goes (study, series or instance)."""
        return 3 if self.instance is not None else 2 if self.series is not None else 1


def parse_selection(item: object) -> Selection:
    """(study, series, instance) from one handed-over value: a resource path, a bare study UID, a
    tuple/list of up to three UIDs, or a mapping with StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID
    (or study/series/instance) keys. Values that fit none of these come back as a reject marker."""
    if isinstance(item, str):
        text = item.strip()
        if text.startswith("/"):
            parts = text.split("/")
            names = ("studies", "series", "instances")
            if (
                len(parts) in (3, 5, 7)
                and parts[0] == ""
                and all(parts[i] == names[(i - 1) // 2] for i in range(1, len(parts), 2))
            ):
                return Selection(*parts[2::2])
            return Selection(_NotASelection(text))
        return Selection(text)
    if isinstance(item, Mapping):
        found: list[object] = [None, None, None]
        lowered = {str(k).lower(): v for k, v in item.items()}
        for index, keys in _DICT_KEYS.items():
            for key in keys:
                if key.lower() in lowered:
                    found[index] = lowered[key.lower()]
                    break
        return Selection(*found)
    if isinstance(item, Sequence) and not isinstance(item, (bytes, bytearray)) and 1 <= len(item) <= 3:
        return Selection(*item)
    return Selection(_NotASelection(item))


class _NotASelection:
    """A handed-over value that is neither a path, a UID, a tuple nor a mapping (a reject)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _sort_key(selection: Selection, level: str | None) -> tuple[str, str, str]:
    wanted = LEVELS.index(level) + 1 if level is not None else selection.depth
    study, series, instance = (v if isinstance(v, str) else "" for v in selection)
    return (study, series if wanted >= 2 else "", instance if wanted >= 3 else "")


def write_selections(writer: FilterWriter, items: Iterable[object], *, level: str | None, presorted: bool) -> None:
    """Feed handed-over values to `writer`. Unless `presorted`, the values are sorted first (they
    are in memory already, being an XCom value or a file the CLI was given)."""
    parsed: Iterable[Selection] = (parse_selection(item) for item in items)
    if not presorted:
        parsed = sorted(parsed, key=lambda selection: _sort_key(selection, level))
    for study, series, instance in parsed:
        if isinstance(study, _NotASelection):
            writer.result.reject(study.value, "not a resource path, UID, tuple or mapping")
            continue
        writer.add(study, series, instance, level=level)


MAX_NESTING = 8  # lists/mappings inside each other in `uids` or query parameters


class NestingError(DicomProviderError, ValueError):
    """A value nested deeper than MAX_NESTING levels (refused before it can exhaust the stack)."""


def check_nesting(value: object, name: str, most: int = MAX_NESTING) -> object:
    """Refuse values nested deeper than `most` levels of lists/tuples/mappings, without recursion
    (a deeply nested value would otherwise end in RecursionError far from the argument)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = list(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        if depth > most:
            raise NestingError(
                f"invalid {name}: lists or mappings nested more than {most} levels deep "
                f"({type(value).__name__} of {len(value) if hasattr(value, '__len__') else '?'} items)"
            )
        stack.extend((child, depth + 1) for child in children)
    return value


def parse_literal(text: str, name: str) -> object:
    """A JSON value, else a Python literal (what a template renders a list or dict to); ValueError
    (never RecursionError) when it is neither or nested too deeply."""
    import ast
    import json

    for loader in (json.loads, ast.literal_eval):
        try:
            loaded = loader(text)
        except (RecursionError, MemoryError):
            raise NestingError(
                f"invalid {name}: nested more than {MAX_NESTING} levels deep ({len(text)} characters of text)"
            ) from None
        except (ValueError, SyntaxError, TypeError):
            continue
        return check_nesting(loaded, name)
    raise ValueError(f"invalid {name} {text[:200]!r}: not JSON nor a Python literal")


def coerce_items(value: object) -> list[object]:
    """The `uids` argument as a list: a list/tuple as is; a string that holds JSON or a Python
    literal (what a Jinja template renders an XCom list to); otherwise one item a line."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(check_nesting(value, "uids"))  # type: ignore[call-overload]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            try:
                loaded = parse_literal(text, "uids")
            except NestingError:
                raise
            except ValueError:
                loaded = None  # not a literal: one item a line
            if isinstance(loaded, (list, tuple)):
                return list(loaded)
        return [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        return list(value)
    raise ValueError(f"invalid uids {type(value).__name__}: expected a list of paths, UIDs, tuples or mappings")


def iter_lines(stream: Iterable[str]) -> Iterator[str]:
    """Non-blank lines of a text stream, `\\n` or `\\r\\n` separated, without a byte-order mark."""
    for number, line in enumerate(stream):
        text = line.strip()
        if number == 0:
            text = text.lstrip("\ufeff").strip()
        if text:
            yield text


# ---- SQL ----------------------------------------------------------------------------------------


def strip_sql(sql: str) -> str:
    """The query without a leading `#standardSQL` line or trailing semicolons, so it nests."""
    lines = sql.strip().splitlines()
    while lines and lines[0].strip().lower() in ("#standardsql", "#standard sql"):
        lines.pop(0)
    text = "\n".join(lines).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise ValueError("the filter query is empty")
    if lines and lines[0].strip().lower().startswith("#legacysql"):
        raise ValueError("legacy SQL is not supported: write the filter query in GoogleSQL")
    return text


def check_column_name(name: object) -> str:
    """A column name spliced into SQL (quoted): letters, digits and underscores only."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,299}", name):
        raise ValueError(f"invalid column name {name!r}: expected letters, digits and '_', not starting with a digit")
    return name


def _quote_column(name: str) -> str:
    return f"`{check_column_name(name)}`"


def table_sql(table_id: str) -> str:
    """A query reading a whole table (`project.dataset.table`), the Cloud Healthcare export's columns."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", table_id):
        raise ValueError(f"invalid table {table_id!r}")
    return f"SELECT * FROM `{table_id}`"


def wrap_query(sql: str, level: str, *, uid_columns: Sequence[str] = UID_COLUMNS, path_column: str | None = None) -> str:
    """The user's query, nested, reduced to distinct (study, series, instance) at `level` and
    ordered so that `FilterWriter` can dedupe in bounded memory. User values stay in query
    parameters; only validated column names are spliced in."""
    inner = strip_sql(sql)
    if path_column is not None:
        column = _quote_column(path_column)
        # Not ORDER BY path: "/" sorts after ".", which would put /studies/1.2.3 between the lines
        # of /studies/1.2. With "/" read as " " (below every UID character) a study's lines stay together.
        return (
            f"SELECT path FROM (SELECT DISTINCT CAST({column} AS STRING) AS path FROM (\n{inner}\n)) "
            "ORDER BY REPLACE(path, '/', ' ')"
        )
    depth = LEVELS.index(level) + 1
    names = ("study", "series", "instance")
    selected = [f"CAST({_quote_column(uid_columns[i])} AS STRING) AS {names[i]}" for i in range(depth)]
    order = ", ".join(["study"] + [f"{names[i]} ASC NULLS FIRST" for i in range(1, depth)])
    return f"SELECT DISTINCT {', '.join(selected)} FROM (\n{inner}\n) ORDER BY {order}"


def server_side_sql(source_table_id: str, level: str) -> tuple[str, str]:
    """(paths query, counts query) for the server-side route, over the ordered result table.

    The paths query keeps only valid, distinct rows (a fixed level has no covered lines); the counts
    query reports what was kept and what was rejected, computed by BigQuery, not the worker."""
    depth = LEVELS.index(level) + 1
    names = ("study", "series", "instance")
    valid = " AND ".join(
        f"({n} IS NOT NULL AND LENGTH({n}) <= {MAX_UID_LENGTH} AND REGEXP_CONTAINS({n}, r'{UID_REGEX}'))"
        for n in names[:depth]
    )
    pieces = ["'/studies/', study"]
    if depth >= 2:
        pieces.append("'/series/', series")
    if depth >= 3:
        pieces.append("'/instances/', instance")
    path = f"CONCAT({', '.join(pieces)})"
    table = f"`{source_table_id}`"
    paths = f"SELECT DISTINCT {path} AS path FROM {table} WHERE {valid}"
    series_key = "CONCAT(study, '/', series)" if depth >= 2 else "NULL"
    counts = (
        f"SELECT COUNTIF({valid}) AS accepted, COUNTIF(NOT ({valid})) AS rejected, "
        f"COUNT(DISTINCT IF({valid}, study, NULL)) AS studies, "
        f"COUNT(DISTINCT IF({valid}, {series_key}, NULL)) AS series FROM {table}"
    )
    return paths, counts


def query_parameters(spec: object) -> list[Any]:
    """google-cloud-bigquery query parameters from a JSON-friendly spec, so they can be templated:
    ``{"name": value}`` (type inferred: str STRING, bool BOOL, int INT64, float FLOAT64, date DATE,
    datetime TIMESTAMP, list ARRAY of the first item's type), ``{"name": {"type": "DATE", "value":
    "2024-01-01"}}`` (``"type": "ARRAY<STRING>"`` for arrays), or a list of BigQuery API parameter
    dicts (``{"name", "parameterType", "parameterValue"}``, as BigQueryInsertJobOperator takes)."""
    from google.cloud import bigquery

    if spec is None or spec == {} or spec == []:
        return []
    if isinstance(spec, str):
        spec = parse_literal(spec, "query_parameters")
    check_nesting(spec, "query_parameters")
    if isinstance(spec, list):
        built = []
        for item in spec:
            if isinstance(item, bigquery.query._AbstractQueryParameter):
                built.append(item)
            elif isinstance(item, Mapping) and "parameterType" in item:
                kind = item["parameterType"].get("type")
                cls = bigquery.ArrayQueryParameter if kind == "ARRAY" else bigquery.ScalarQueryParameter
                built.append(cls.from_api_repr(dict(item)))
            else:
                raise ValueError(f"invalid query parameter {item!r}: expected a BigQuery API parameter dict")
        return built
    if not isinstance(spec, Mapping):
        raise ValueError(f"invalid query_parameters {type(spec).__name__}: expected a mapping or a list")
    built = []
    for name, value in spec.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise ValueError(f"invalid query parameter name {name!r}")
        if isinstance(value, Mapping):
            if "type" not in value or "value" not in value:
                raise ValueError(f"query parameter {name!r}: expected {{'type': ..., 'value': ...}}")
            kind = str(value["type"]).strip().upper()
            raw = value["value"]
            match = re.fullmatch(r"ARRAY<\s*([A-Z0-9_]+)\s*>", kind)
            if match:
                if isinstance(raw, str):
                    raw = _rendered_list(name, raw)
                if not isinstance(raw, (list, tuple)):
                    raise ValueError(f"query parameter {name!r} is {kind}: expected a list value")
                built.append(bigquery.ArrayQueryParameter(name, match.group(1), [_typed(name, match.group(1), v) for v in raw]))
            else:
                built.append(bigquery.ScalarQueryParameter(name, kind, _typed(name, kind, raw)))
        elif isinstance(value, (list, tuple)):
            kinds = {_infer_type(v) for v in value}
            if len(kinds) > 1:
                raise ValueError(f"query parameter {name!r}: array items of mixed types {sorted(kinds)}")
            built.append(bigquery.ArrayQueryParameter(name, kinds.pop() if kinds else "STRING", list(value)))
        else:
            built.append(bigquery.ScalarQueryParameter(name, _infer_type(value), value))
    return built


def _rendered_list(name: str, text: str) -> object:
    """A list a template rendered to text (`["a", "b"]` with `| tojson`, or Python's repr)."""
    stripped = text.strip()
    if stripped in ("", "None"):
        return []
    try:
        return parse_literal(stripped, f"query parameter {name!r}")
    except NestingError:
        raise
    except ValueError:
        pass
    raise ValueError(f"query parameter {name!r}: {text[:200]!r} is not a list")


def _infer_type(value: object) -> str:
    import datetime

    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, datetime.datetime):
        return "TIMESTAMP"
    if isinstance(value, datetime.date):
        return "DATE"
    if value is None or isinstance(value, str):
        return "STRING"
    raise ValueError(f"cannot infer a query parameter type for {type(value).__name__}: give {{'type', 'value'}}")


def _typed(name: str, kind: str, raw: object) -> Any:
    """A rendered (string) value converted to the Python type google-cloud-bigquery expects; any
    other value as the caller gave it (google-cloud-bigquery judges it)."""
    import datetime

    if raw is None or not isinstance(raw, str):
        return raw
    try:
        if kind in ("INT64", "INTEGER"):
            return int(raw)
        if kind in ("FLOAT64", "FLOAT", "NUMERIC", "BIGNUMERIC"):
            return float(raw)
        if kind in ("BOOL", "BOOLEAN"):
            if raw.strip().lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.strip().lower() == "true"
        if kind == "DATE":
            return datetime.date.fromisoformat(raw.strip()[:10])
        if kind in ("TIMESTAMP", "DATETIME"):
            return datetime.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"query parameter {name!r}: {raw!r} is not a valid {kind}") from None
    return raw


SCALAR_TYPES = frozenset(
    {"STRING", "INT64", "INTEGER", "FLOAT64", "FLOAT", "NUMERIC", "BIGNUMERIC", "BOOL", "BOOLEAN", "DATE",
     "DATETIME", "TIMESTAMP", "TIME", "BYTES", "JSON"}
)


def parse_cli_param(text: str) -> tuple[str, dict[str, object]]:
    """`name=TYPE:value` (or `name=value`, a STRING; `name=ARRAY<STRING>:a,b`) from the command line."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"invalid --param {text!r}: expected name=TYPE:value")
    kind, colon, value = rest.partition(":")
    kind = kind.strip().upper()
    if not colon or not (kind in SCALAR_TYPES or re.fullmatch(r"ARRAY<\s*[A-Z0-9]+\s*>", kind)):
        return name.strip(), {"type": "STRING", "value": rest}
    if kind.startswith("ARRAY"):
        return name.strip(), {"type": kind, "value": [v for v in value.split(",") if v != ""]}
    return name.strip(), {"type": kind, "value": value}


# ---- sinks --------------------------------------------------------------------------------------


def sink_opener(destination: str, *, storage_client: Any = None, chunk_size: int = GCS_CHUNK_SIZE) -> Any:
    """A zero-argument callable opening an atomic text sink on `destination` (local path or
    gs://bucket/object): see `atomic_write` for why a failed write leaves the old file."""
    if not destination.startswith("gs://"):
        check_local_target(local_path(destination))  # refuse a device or folder now, not at the first line

    def open_sink() -> AtomicWriter:
        return open_atomic(destination, storage_client=storage_client, chunk_size=chunk_size)

    return open_sink


def check_destination(destination: object, *, on_disk: bool = False) -> str:
    """A filter file destination: `gs://BUCKET/OBJECT` or a local path without `..` segments (see
    `atomic_write`). With `on_disk` (on the worker, before any query runs) a local path must also
    be a regular file or not exist yet: devices, FIFOs, folders and symbolic links are refused."""
    if not isinstance(destination, str) or not destination.strip():
        raise ValueError(f"invalid destination {destination!r}: expected gs://BUCKET/OBJECT or a local path")
    if destination.startswith("gs://"):
        from airflow_provider_dicom.model.uris import GcsUri

        GcsUri.parse(destination, require_object=True)
    elif on_disk:
        check_local_target(local_path(destination))
    else:
        check_local_path(local_path(destination))
    return destination


# ---- the whole build, from rows -----------------------------------------------------------------


def build_from_rows(
    rows: Iterable[Any],
    destination: str,
    *,
    level: str | None,
    on_empty: str = "fail",
    path_column: str | None = None,
    storage_client: Any = None,
    presorted: bool = True,
    chunk_size: int = GCS_CHUNK_SIZE,
) -> BuildResult:
    """Write the filter file for query rows (mappings or BigQuery Rows with `study`, `series`,
    `instance` keys, or `path` with `path_column`), or for handed-over values when `presorted` is
    False. Raises EmptyFilterError when nothing is selected and the policy is `fail` (nothing is
    written then, nor with `skip`)."""
    policy = check_on_empty(on_empty)
    result = BuildResult(uri=destination, level=level)
    writer = FilterWriter(result, sink_opener(destination, storage_client=storage_client, chunk_size=chunk_size))
    try:
        if path_column is not None or not presorted:
            items: Iterable[object] = (row["path"] for row in rows) if path_column is not None else rows
            write_selections(writer, items, level=level, presorted=presorted)
        else:
            for row in rows:
                writer.add(
                    row["study"],
                    row.get("series") if level != "study" else None,
                    row.get("instance") if level == "instance" else None,
                    level=level,
                )
    except BaseException:
        writer.abort()
        raise
    if result.lines == 0 and policy == "fail":
        writer.abort()
        raise EmptyFilterError(empty_message(result))
    writer.close(write_empty=policy == "write_empty")
    return result


def empty_message(result: BuildResult) -> str:
    text = f"the filter selects nothing: no resource path to write to {result.uri}"
    if result.rejected:
        text += f" ({result.rejected} rejected: {'; '.join(result.rejected_examples)})"
    return text
