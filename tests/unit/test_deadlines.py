"""The deadline policy: configurable bounds, errors that name the endpoint and the step, jobs
waited for with a bound and a "still waiting" line. (Frozen real services: tests/integration/
test_deadlines_faults.py.)"""

from __future__ import annotations

import logging

import pytest

from airflow_provider_dicom.utils import deadlines
from airflow_provider_dicom.utils.deadlines import RemoteCallError


def test_defaults_and_environment(monkeypatch):
    for name in (deadlines.REQUEST_TIMEOUT_ENV, deadlines.RETRY_DEADLINE_ENV, deadlines.JOB_TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    assert deadlines.Deadlines.current() == deadlines.Deadlines(60.0, 180.0, 6 * 3600.0)
    monkeypatch.setenv(deadlines.REQUEST_TIMEOUT_ENV, "7.5")
    assert deadlines.request_timeout() == 7.5


@pytest.mark.parametrize("text", ["0", "-3", "soon", "inf", "nan"])
def test_a_bad_setting_is_refused_naming_it(monkeypatch, text):
    monkeypatch.setenv(deadlines.RETRY_DEADLINE_ENV, text)
    with pytest.raises(ValueError, match=f"{deadlines.RETRY_DEADLINE_ENV} {text!r}"):
        deadlines.Deadlines.current()


def test_a_retry_logs_each_attempt_and_ends_with_the_endpoint_and_the_step(monkeypatch, caplog):
    import requests

    monkeypatch.setenv(deadlines.RETRY_DEADLINE_ENV, "0.3")
    retry = deadlines.bigquery_retry("getting table bq://p.d.t", "http://127.0.0.1:9")
    calls = []

    def call():
        calls.append(1)
        raise requests.exceptions.ConnectionError("Connection refused")

    with caplog.at_level(logging.WARNING), pytest.raises(RemoteCallError) as caught:
        with deadlines.remote("getting table bq://p.d.t", "http://127.0.0.1:9"):
            retry(call)()
    message = str(caught.value)
    assert "getting table bq://p.d.t" in message and "http://127.0.0.1:9" in message
    assert "Connection refused" in message and deadlines.RETRY_DEADLINE_ENV in message
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "attempt 1 failed (ConnectionError: Connection refused)" in warnings[0]
    assert "http://127.0.0.1:9" in warnings[0]


def test_a_request_timeout_outside_a_retry_is_translated_too():
    import requests

    with pytest.raises(RemoteCallError, match="uploading gs://b/o: no answer from http://gcs"):
        with deadlines.remote("uploading gs://b/o", "http://gcs"):
            raise requests.exceptions.ReadTimeout("read timed out")


def test_other_errors_pass_through():
    from google.api_core.exceptions import NotFound

    with pytest.raises(NotFound), deadlines.remote("x", "y"):
        raise NotFound("no table")


class FakeJob:
    job_id = "job_1"

    def __init__(self, polls_until_done: int | None) -> None:
        self.polls = 0
        self.until = polls_until_done
        self.kwargs: list[dict] = []

    def done(self, **kwargs):
        self.kwargs.append(kwargs)
        self.polls += 1
        return self.until is not None and self.polls >= self.until

    @property
    def state(self):
        return "RUNNING"

    def result(self, **kwargs):
        self.kwargs.append(kwargs)
        return "rows"


def test_wait_for_job_polls_with_deadlines_and_returns_the_result(monkeypatch):
    job = FakeJob(3)
    assert deadlines.wait_for_job(job, "loading", endpoint="e", sleep=lambda s: None, page_size=5) == "rows"
    assert all(k["timeout"] == deadlines.request_timeout() and k["retry"] is not None for k in job.kwargs)
    assert job.kwargs[-1]["page_size"] == 5


def test_wait_for_job_says_it_is_waiting_and_stops_at_the_job_timeout(monkeypatch, caplog):
    clock = [0.0]
    monkeypatch.setattr(deadlines.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv(deadlines.JOB_TIMEOUT_ENV, "300")

    def sleep(seconds):
        clock[0] += 20

    with caplog.at_level(logging.INFO), pytest.raises(RemoteCallError) as caught:
        deadlines.wait_for_job(FakeJob(None), "loading rows into bq://p.d.t", endpoint="http://bq", sleep=sleep)
    assert "job_1" in str(caught.value) and "http://bq" in str(caught.value)
    assert deadlines.JOB_TIMEOUT_ENV in str(caught.value)
    waiting = [r.getMessage() for r in caplog.records if "Still waiting on BigQuery job job_1" in r.getMessage()]
    assert 3 <= len(waiting) <= 6  # about once a minute over 300 s


def test_the_healthcare_hook_http_has_the_request_timeout(monkeypatch):
    monkeypatch.setenv(deadlines.REQUEST_TIMEOUT_ENV, "12")
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEADLINE_TEST",
        '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true, "project": "p"}}',
    )
    from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook

    http = DicomStoreHook(gcp_conn_id="deadline_test", api_endpoint="http://127.0.0.1:9")._authorize()
    assert http.http.timeout == 12.0
