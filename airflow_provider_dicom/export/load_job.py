"""Load jobs with deterministic ids, so a retried export finds the load its earlier try ran.

An export's rows reach the table in one BigQuery load job, which commits all of them or none.
What a random job id cannot tell is whether an earlier try of the same export already committed:
a retry then loads everything again, and WRITE_APPEND doubles every row. So the caller (the
operator, which knows its task and try lineage; the sharded export, which knows its plan) names
the export with a *base* id, and the jobs of that export are `{base}_0`, `{base}_1`, ... in order:

- `find_earlier_load` looks at them before anything is read or judged: a job that succeeded is
  the export's outcome (nothing is loaded again, and the destination rules are not judged against
  the table that job itself wrote); a running one is waited on; a failed one moves on to the next
  id, and the first id not used yet is where a new load starts.
- `run_load` submits the load under that id; if another process submitted it a moment earlier
  (409 Conflict) it adopts that job rather than loading twice.

BigQuery keeps job ids for the project's job history (at least 6 months), which is what makes
them usable as the record of "this export was loaded". Nothing here knows about Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.export.errors import ExportError, load_error
from airflow_provider_dicom.utils.deadlines import bigquery_call, endpoint_of, remote, wait_for_job

if TYPE_CHECKING:
    from airflow_provider_dicom.model.uris import BigQueryTableUri

log = logging.getLogger(__name__)

# A load retried this many times with every job failing is not going to succeed by retrying more.
MAX_LOAD_JOBS = 20


@dataclass(frozen=True)
class LoadJobChain:
    """The ids the load jobs of one export may take: `{base}_0`, `{base}_1`, ..."""

    base: str

    def job_id(self, attempt: int) -> str:
        return f"{self.base}_{attempt}"


@dataclass
class EarlierLoad:
    """What earlier tries left: a succeeded load (`job`, `succeeded`), or the attempt number at
    which a new load starts (every earlier job failed, or there was none)."""

    next_attempt: int
    job: Any = None
    succeeded: bool = False


def find_earlier_load(
    client: Any, chain: LoadJobChain, table: BigQueryTableUri, on_job: Callable[[str], None] | None = None
) -> EarlierLoad:
    """Look at the chain's jobs in order; wait for a running one. See the module docstring."""
    from google.api_core.exceptions import GoogleAPICallError, NotFound

    for attempt in range(MAX_LOAD_JOBS):
        job_id = chain.job_id(attempt)
        doing = f"looking for load job {job_id} of an earlier try"
        try:
            with remote(doing, endpoint_of(client)):
                job = client.get_job(job_id, **bigquery_call(client, doing))
        except NotFound:
            return EarlierLoad(attempt)
        if job.state != "DONE":
            log.info("Load job %s of an earlier try is %s: waiting for it rather than loading again",
                     job_id, job.state)
            if on_job is not None:
                on_job(job_id)
            try:
                wait_for_job(job, f"an earlier try's load into {table}")
            except GoogleAPICallError as exc:
                log.info("Load job %s of an earlier try failed (%s); a new one will load", job_id,
                         load_error(exc, job, table))
                continue
        if job.error_result is not None:
            log.info("Load job %s of an earlier try failed (%s); a new one will load", job_id,
                     job.error_result.get("reason", "unknown reason"))
            continue
        log.info("Load job %s of an earlier try already loaded this export into %s: not loading again",
                 job_id, table)
        return EarlierLoad(attempt, job, succeeded=True)
    raise _too_many(chain, table)


def run_load(
    client: Any,
    table: BigQueryTableUri,
    chain: LoadJobChain,
    submit: Callable[[str], Any],
    *,
    start_at: int = 0,
    on_job: Callable[[str], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
) -> tuple[str, bool]:
    """Submit the load as `chain.job_id(start_at)` and wait; returns (job id, whether it adopted a
    job someone else had just submitted under that id). Raises ExportError when the job fails.
    `on_done` is given the finished job (its statistics, for lineage)."""
    from google.api_core.exceptions import Conflict, GoogleAPICallError

    if start_at >= MAX_LOAD_JOBS:
        raise _too_many(chain, table)
    job_id = chain.job_id(start_at)
    job = None
    reattached = False
    try:
        try:
            job = submit(job_id)
        except Conflict:  # another try started it a moment ago
            doing = f"adopting load job {job_id}"
            with remote(doing, endpoint_of(client)):
                job = client.get_job(job_id, **bigquery_call(client, doing))
            reattached = True
        if on_job is not None:
            on_job(job_id)
        wait_for_job(job, f"loading rows into {table}")
    except GoogleAPICallError as exc:
        raise load_error(exc, job, table) from None
    if on_done is not None:
        on_done(job)
    return job_id, reattached


def _too_many(chain: LoadJobChain, table: BigQueryTableUri) -> ExportError:
    return ExportError(
        f"{MAX_LOAD_JOBS} load jobs of this export into {table} have failed; look at the first "
        f"({chain.job_id(0)}) in BigQuery for the reason"
    )
