"""A DICOMweb server (Orthanc, dcm4chee, Google's own DICOMweb, ...) as a stream of per-instance outcomes.

QIDO-RS enumerates (studies, then each study's series, paginated with limit/offset), and WADO-RS
reads: `/studies/{s}/series/{se}/metadata` returns the DICOM JSON of every instance of a series in
one request, which is far cheaper than one request per instance, and carries no pixel data (bulk
data comes as BulkDataURI references, which are never followed). The JSON is converted to a
row by the same walker as a file's header (dicom/json_model.py), so the table has the same columns;
the JSON table's Metadata is walked from the same JSON (dicom/json_table.py). Either way pydicom
builds a Dataset only for the odd instance the walk hands on.

What DICOMweb cannot give, and so differs from a folder export of the same files:
- the File Meta Information (group 0002: TransferSyntaxUID, MediaStorageSOPClassUID, ...) is not
  part of the DICOM JSON model: those columns (and FileMetaInformationVersion in DroppedTags) are
  absent;
- DS and IS values are JSON numbers: "0.50" comes back as 0.5 and is exported as "0.5" (the
  shortest text of the number), where the file kept its own text;
- a server may replace any binary or long value by a BulkDataURI: such an element is listed in
  DroppedTags (as binary elements are) and logged, never silently lost;
- BlobStorageSize and LastUpdated: DICOMweb has no standard attribute for either, so they are
  left empty rather than guessed.

A filter file is resolved as targeted requests: a study line lists only that study's series, a
series line fetches only that series' metadata, and a few instance lines of one series fetch only
those instances' metadata; nothing else on the server is enumerated.

Servers are not always consistent. Orthanc keys a study by patient and study UID, so one
StudyInstanceUID under two PatientIDs is two studies: QIDO-RS lists both, and WADO-RS answers 404
for their UIDs. Such instances are reported as failures, with that reason, never crashed on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_dicom.dicom.json_model import dataset_from_json  # noqa: F401 - this module's API
from airflow_provider_dicom.dicom.outcomes import (
    FAILED,
    FILTERED,
    Accept,
    InstanceOutcome,
    convert_json_metadata,
    failure,
)
from airflow_provider_dicom.sources.remote import DEFAULT_WORKERS, RemoteReadError, ordered_map
from airflow_provider_dicom.utils.deadlines import DICOMWEB_TIMEOUT
from airflow_provider_dicom.utils.redact import redact_quoted

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
# With at most this many instance lines for one series in a filter, each is fetched on its own;
# with more, the series' metadata is fetched once and filtered (one response instead of many).
INSTANCE_REQUESTS_PER_SERIES = 10
DEFAULT_TIMEOUT = DICOMWEB_TIMEOUT  # connect, read: see airflow_provider_dicom.utils.deadlines
_NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
_NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"


class DicomWebError(RemoteReadError):
    """A DICOMweb request failed (after retries); the message names the request and the status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DicomWebAuthError(DicomWebError):
    """401/403: the credentials are wrong for this server; retrying instance by instance cannot help."""


class DicomWebClient:
    """The QIDO-RS and WADO-RS requests the export makes, over one pooled requests.Session.

    `auth` is what requests takes (a (user, password) tuple for basic auth); `headers` are added to
    every request (e.g. an Authorization bearer token from an Airflow connection's extra).
    Idempotent GETs are retried on connection errors, 429 and 5xx with backoff."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Any = None,
        headers: dict[str, str] | None = None,
        timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        page_size: int = PAGE_SIZE,
        pool_size: int = DEFAULT_WORKERS,
        retries: int = 5,
        session: Any = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid DICOMweb URL {base_url!r}: expected http(s)://HOST[:PORT]/PATH")
        if parts.username or parts.password:
            raise ValueError(
                "the DICOMweb URL must not hold credentials (they would be logged); put them in an "
                "Airflow DICOMweb connection (dicomweb_conn_id) instead"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.page_size = page_size
        self.requests_made = 0
        if session is None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            session = requests.Session()
            retry = Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                backoff_factor=0.5,
                status_forcelist=(429, 500, 502, 503, 504),
                allowed_methods=frozenset({"GET"}),
                respect_retry_after_header=True,
                raise_on_status=False,
            )
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 10), max_retries=retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        session.headers.update({"Accept": "application/dicom+json, application/json"})
        if headers:
            session.headers.update(headers)
        if auth is not None:
            session.auth = auth
        session.verify = verify
        self.session = session

    def url(self, *segments: str) -> str:
        """The URL of a resource, to request. Each segment (a UID from the filter or from the
        server's own answers) is one path segment whatever it holds (`/` is escaped). A segment of
        dots cannot be sent: URL normalisation resolves it (`/series/../metadata` is the whole
        study's metadata) and requests decodes `%2E` back to a dot, so it is refused here
        (DicomWebError, which callers report as that study's, series' or instance's failure)."""
        for segment in segments:
            if not segment.strip("."):
                raise DicomWebError(
                    f"{segment!r} is not a UID: a path segment of dots would address another resource "
                    f"({self.name(*segments)})"
                )
        return self.name(*segments)

    def name(self, *segments: str) -> str:
        """The resource's URL as a name for reports: never raises, never requested."""
        return "/".join([self.base_url, *(quote(segment, safe="") for segment in segments)])

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        """GET a DICOM JSON resource: the parsed body, [] for 204 No Content. Raises
        DicomWebError with the status (404 included: callers decide what a missing resource means)."""
        import requests

        self.requests_made += 1
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise DicomWebError(f"GET {url} failed: {type(exc).__name__}: {redact_quoted(exc)}") from None
        status = response.status_code
        if status == 204:
            return []
        if status in (401, 403):
            raise DicomWebAuthError(
                f"GET {url}: HTTP {status} {response.reason}: the DICOMweb server refused the request; "
                "check the credentials of the connection",
                status,
            )
        if status >= 400:
            raise DicomWebError(f"GET {url}: HTTP {status} {response.reason}", status)
        try:
            return json.loads(response.content)
        except ValueError:
            content_type = response.headers.get("Content-Type", "?")
            raise DicomWebError(
                f"GET {url}: the answer is not DICOM JSON (Content-Type {content_type})", status
            ) from None

    def search(self, *segments: str, expected: int | None = None, **query: str) -> list[dict]:
        """A QIDO-RS search, all pages. Paging stops at an empty page, or once `expected` results
        (a count the server gave, e.g. NumberOfStudyRelatedSeries) are in: a server may cap a page
        below the limit asked for, so a short page alone does not prove the end."""
        return list(self.iter_search(*segments, expected=expected, **query))

    def iter_search(self, *segments: str, expected: int | None = None, **query: str) -> Iterator[dict]:
        url = self.url(*segments)
        offset = 0
        while True:
            page = self.get_json(url, {**query, "limit": self.page_size, "offset": offset})
            if not isinstance(page, list):
                raise DicomWebError(f"GET {url}: expected a JSON array of results")
            if not page:
                return
            yield from page
            offset += len(page)
            if expected is not None and offset >= expected:
                return

    def series_metadata(self, study: str, series: str) -> list[dict]:
        return self._metadata("studies", study, "series", series, "metadata")

    def instance_metadata(self, study: str, series: str, sop: str) -> list[dict]:
        return self._metadata("studies", study, "series", series, "instances", sop, "metadata")

    def _metadata(self, *segments: str) -> list[dict]:
        url = self.url(*segments)
        body = self.get_json(url)
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise DicomWebError(f"GET {url}: expected a JSON array of DICOM JSON datasets")
        return body

    def close(self) -> None:
        self.session.close()


def client_from_connection(
    base_url: str,
    *,
    login: str | None = None,
    password: str | None = None,
    extra: dict[str, Any] | None = None,
    pool_size: int = DEFAULT_WORKERS,
    conn_id: str | None = None,
) -> DicomWebClient:
    """A DicomWebClient from the fields of an Airflow HTTP connection, read the way the HTTP
    provider's HttpHook reads them: login and password are basic authentication, and the extra's
    keys are HTTP headers, except `verify` (False, or a CA bundle path) and `timeout` (seconds)."""
    extra = dict(extra or {})
    verify = extra.pop("verify", True)
    if isinstance(verify, str) and verify.lower() in ("false", "true"):
        verify = verify.lower() == "true"
    timeout = extra.pop("timeout", None)
    named = f"connection {conn_id!r}" if conn_id else "the connection"
    headers = {}
    for key, value in extra.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(  # noqa: TRY004 - a wrong setting, reported as a bad value
                f"{named}: extra {key!r} must be a header value (text), not {type(value).__name__}"
            )
        headers[str(key)] = str(value)
    auth = (login, password or "") if login else None
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        try:
            kwargs["timeout"] = (DEFAULT_TIMEOUT[0], float(timeout))
        except (TypeError, ValueError):
            raise ValueError(f"{named}: extra 'timeout' must be a number of seconds") from None
    return DicomWebClient(base_url, auth=auth, headers=headers, verify=verify, pool_size=pool_size, **kwargs)


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """One series to read: all its instances (`instances` None) or only those listed."""

    study: str
    series: str
    instances: tuple[str, ...] | None = None


@dataclass(slots=True)
class InstanceJson:
    """One instance's DICOM JSON as fetched (or why it could not be): work for the consumer."""

    name: str  # the instance's WADO-RS URL (UIDs only, no PHI)
    metadata: dict | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ListedStudy:
    """A study as QIDO-RS listed it; the counts are None when the server did not give them."""

    uid: str
    series: int | None = None
    instances: int | None = None


class DicomWebSource:
    """The instances of a DICOMweb server (or the part a filter selects), read with WADO-RS metadata."""

    def __init__(
        self,
        client: DicomWebClient | str,
        *,
        workers: int = DEFAULT_WORKERS,
        max_in_flight: int | None = None,
        filter_set: Any = None,
    ) -> None:
        self.client = DicomWebClient(client, pool_size=workers) if isinstance(client, str) else client
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.max_in_flight = max_in_flight or 2 * workers
        self.filter_set = filter_set
        self.bulk_data_elements = 0  # elements given as BulkDataURI, listed in DroppedTags

    # -- what to read ----------------------------------------------------------------------------

    def listed_studies(self) -> Iterator[ListedStudy]:
        """Every study on the server once (QIDO-RS may list a UID twice), with the sizes it gave."""
        seen: set[str] = set()
        for study in self.client.iter_search("studies"):
            uid = _first(study, _STUDY_UID)
            if uid is None or uid in seen:
                continue
            seen.add(uid)
            yield ListedStudy(
                uid, _count(study, _NUMBER_OF_STUDY_RELATED_SERIES), _count(study, _NUMBER_OF_STUDY_RELATED_INSTANCES)
            )

    def study_uids(self) -> Iterator[tuple[str, int | None]]:
        """Every study on the server once, with its series count."""
        for study in self.listed_studies():
            yield study.uid, study.series

    def series_of(self, study: str, expected: int | None = None) -> list[SeriesRef]:
        found = self.client.search("studies", study, "series", expected=expected)
        uids = dict.fromkeys(uid for uid in (_first(s, _SERIES_UID) for s in found) if uid)
        return [SeriesRef(study, uid) for uid in uids]

    def planned_series(self, pool: ThreadPoolExecutor) -> Iterator[SeriesRef | InstanceJson]:
        """The series to read, in a stable order: the server's, or the filter's.

        A study whose series cannot be listed is yielded as a failed InstanceJson named by the study."""

        def listing(item: tuple[str, int | None]) -> list[SeriesRef | InstanceJson]:
            study, expected = item
            try:
                return list(self.series_of(study, expected))
            except DicomWebAuthError:
                raise
            except DicomWebError as exc:
                return [
                    InstanceJson(
                        self.client.name("studies", study), reason=f"cannot list the study's series: {exc}"
                    )
                ]

        if self.filter_set is None:
            for refs in ordered_map(pool, listing, self.study_uids(), self.max_in_flight):
                yield from refs
            return
        studies, series_refs = _plan_filter(self.filter_set)
        for refs in ordered_map(pool, listing, ((study, None) for study in studies), self.max_in_flight):
            yield from refs
        yield from series_refs

    # -- reading -----------------------------------------------------------------------------------

    def fetch(self, ref: SeriesRef | InstanceJson) -> list[InstanceJson]:
        """The DICOM JSON of a series' instances (or of the listed ones); runs in a worker thread."""
        if isinstance(ref, InstanceJson):
            return [ref]
        client = self.client
        if ref.instances is not None:
            found = (self._instance(ref.study, ref.series, sop) for sop in ref.instances)
            return [item for item in found if item is not None]
        try:
            instances = client.series_metadata(ref.study, ref.series)
        except DicomWebAuthError:
            raise
        except DicomWebError as exc:
            if exc.status != 404:
                return [
                    InstanceJson(
                        client.name("studies", ref.study, "series", ref.series),
                        reason=f"cannot read the series' metadata: {exc}",
                    )
                ]
            return self._series_not_found(ref)
        return [self._named(ref, item) for item in instances]

    def _named(self, ref: SeriesRef, item: dict) -> InstanceJson:
        sop = _first(item, _SOP_UID) or "?"
        return InstanceJson(
            self.client.name("studies", ref.study, "series", ref.series, "instances", sop), item
        )

    def _instance(self, study: str, series: str, sop: str, listed: int | None = None) -> InstanceJson | None:
        """One instance's metadata; None when the server does not hold it (a filter line naming an
        instance that is not there selects nothing, as it would in a folder)."""
        name = self.client.name("studies", study, "series", series, "instances", sop)
        try:
            found = self.client.instance_metadata(study, series, sop)
        except DicomWebAuthError:
            raise
        except DicomWebError as exc:
            if exc.status == 404 and listed is None:
                try:
                    listed = len(
                        self.client.search(
                            "studies", study, "series", series, "instances", SOPInstanceUID=sop
                        )
                    )
                except DicomWebError:
                    listed = 0
                if not listed:
                    log.warning("Instance %s of series %s is not on the DICOMweb server", sop, series)
                    return None
            if exc.status == 404 and listed and listed > 1:
                reason = (
                    f"{listed} instances on the server share these study, series and instance UIDs "
                    "(Orthanc keeps one StudyInstanceUID under two PatientIDs as two studies); "
                    "WADO-RS cannot address them: HTTP 404"
                )
            elif exc.status == 404 and listed:
                reason = (
                    "listed by QIDO-RS but WADO-RS metadata answers HTTP 404 (on Orthanc: its study "
                    "UID is shared with another patient's study)"
                )
            else:
                reason = f"cannot read the instance's metadata: {exc}"
            return InstanceJson(name, reason=reason)
        if not found:
            return InstanceJson(name, reason="WADO-RS metadata returned no dataset")
        return InstanceJson(name, found[0])

    def _series_not_found(self, ref: SeriesRef) -> list[InstanceJson]:
        """A series WADO-RS does not find: gone, never there (a filter line), or ambiguous on this
        server. QIDO-RS says which; listed instances are then read (or reported) one by one."""
        listed = self.client.search("studies", ref.study, "series", ref.series, "instances")
        counts: dict[str, int] = {}
        for item in listed:
            sop = _first(item, _SOP_UID)
            if sop:
                counts[sop] = counts.get(sop, 0) + 1
        if not counts:
            log.warning("Series %s of study %s is not on the DICOMweb server", ref.series, ref.study)
            return []
        out: list[InstanceJson] = []
        for sop, count in counts.items():
            result = self._instance(ref.study, ref.series, sop, listed=count)
            if result is not None:
                out.extend([result] * (count if result.metadata is None else 1))
        return out

    # -- the stream -------------------------------------------------------------------------------

    def outcomes(self, converter: Any, accept: Accept | None = None) -> Iterator[InstanceOutcome]:
        """One outcome per instance (or per study/series that could not be read at all), in order."""
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dicom-web") as pool:
            batches = ordered_map(pool, self.fetch, self.planned_series(pool), self.max_in_flight)
            for batch in batches:
                for item in batch:
                    yield self._outcome(item, converter, accept)

    def _outcome(self, item: InstanceJson, converter: Any, accept: Accept | None) -> InstanceOutcome:
        try:
            return self._decide(item, converter, accept)
        except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
            return failure(item.name, exc, "invalid DICOM JSON")

    def _decide(self, item: InstanceJson, converter: Any, accept: Accept | None) -> InstanceOutcome:
        if item.metadata is None:
            return InstanceOutcome(item.name, FAILED, reason=item.reason or "unknown error")
        metadata = item.metadata
        if accept is not None:
            study, series, sop = (
                _first(metadata, _STUDY_UID),
                _first(metadata, _SERIES_UID),
                _first(metadata, _SOP_UID),
            )
            if sop and not accept(study, series, sop):
                return InstanceOutcome(item.name, FILTERED)
        return convert_json_metadata(item.name, metadata, converter, accept, self._count_bulk)

    def _count_bulk(self, tag: str) -> None:
        self.bulk_data_elements += 1


def _first(dataset: dict, tag: str) -> str | None:
    values = (dataset.get(tag) or {}).get("Value") or []
    value = values[0] if values else None
    return value.strip() or None if isinstance(value, str) else None


def _count(dataset: dict, tag: str) -> int | None:
    values = (dataset.get(tag) or {}).get("Value") or []
    try:
        return int(values[0]) if values else None
    except (TypeError, ValueError):
        return None


def _plan_filter(filter_set: Iterable[Any]) -> tuple[list[str], list[SeriesRef]]:
    """The targeted requests for a filter: studies to list, and series (whole or some instances)
    to read. Lines covered by a broader line are dropped; the filter's order is kept."""
    studies: dict[str, None] = {}
    series: dict[tuple[str, str], None] = {}
    instances: dict[tuple[str, str], dict[str, None]] = {}
    paths = list(filter_set)
    for path in paths:
        if path.series is None:
            studies[path.study] = None
    for path in paths:
        if path.study in studies or path.series is None:
            continue
        if path.instance is None:
            series[(path.study, path.series)] = None
    for path in paths:
        if path.instance is None or path.study in studies or (path.study, path.series) in series:
            continue
        instances.setdefault((path.study, path.series), {})[path.instance] = None
    refs = [SeriesRef(study, uid) for study, uid in series]
    for (study, uid), sops in instances.items():
        if len(sops) > INSTANCE_REQUESTS_PER_SERIES:
            refs.append(SeriesRef(study, uid))  # one metadata response; the filter drops the rest
        else:
            refs.append(SeriesRef(study, uid, tuple(sops)))
    return list(studies), refs


def convert_dicomweb(
    client: DicomWebClient | str,
    converter: Any,
    accept: Accept | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[InstanceOutcome]:
    """Like `convert_folder`, for a DICOMweb server. With a FilterSet as `accept`, only what it
    selects is requested."""
    from airflow_provider_dicom.filters.files import FilterSet

    filter_set = accept if isinstance(accept, FilterSet) else None
    source = DicomWebSource(client, workers=workers, filter_set=filter_set)
    yield from source.outcomes(converter, accept)
