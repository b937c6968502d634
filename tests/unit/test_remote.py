"""ordered_map: bounded in-flight work, input order kept, errors surfaced in turn."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_provider_dicom.sources.remote import ordered_map


def test_results_come_in_input_order_whatever_finishes_first():
    def slow_for_small(n: int) -> int:
        time.sleep(0.002 * (20 - n))
        return n * n

    with ThreadPoolExecutor(8) as pool:
        assert list(ordered_map(pool, slow_for_small, range(20), 8)) == [n * n for n in range(20)]


def test_in_flight_work_and_input_consumption_are_bounded():
    lock = threading.Lock()
    running = peak = 0
    pulled = []

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return n

    def source():
        for n in range(100):
            pulled.append(n)
            yield n

    with ThreadPoolExecutor(16) as pool:
        results = ordered_map(pool, work, source(), 4)
        assert next(results) == 0
        assert len(pulled) <= 5  # the consumer is at item 0: at most 4 more were taken
        assert list(results) == list(range(1, 100))
    assert peak <= 4


def test_warm_up_runs_the_first_items_alone():
    seen_running = []
    running = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal running
        with lock:
            running += 1
            seen_running.append((n, running))
        time.sleep(0.005)
        with lock:
            running -= 1
        return n

    with ThreadPoolExecutor(8) as pool:
        assert list(ordered_map(pool, work, range(10), 8, warm_up=2)) == list(range(10))
    assert seen_running[0] == (0, 1) and seen_running[1] == (1, 1)


def test_an_error_is_raised_in_its_turn():
    def work(n: int) -> int:
        if n == 3:
            raise RuntimeError("item 3 failed")
        return n

    got = []
    with ThreadPoolExecutor(4) as pool, pytest.raises(RuntimeError, match="item 3"):
        for value in ordered_map(pool, work, range(10), 4):
            got.append(value)  # noqa: PERF402 - the values before the error are the point
    assert got == [0, 1, 2]


def test_max_in_flight_must_be_positive():
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="max_in_flight"):
        list(ordered_map(pool, abs, [1], 0))
