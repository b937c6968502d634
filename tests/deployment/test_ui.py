"""The Airflow 3 UI as a person uses it, in headless Chromium (Debian's /usr/bin/chromium driven by
playwright; playwright never downloads a browser here): log in, open each example DAG's trigger form,
Trigger is enabled with the defaults, submit, and once the run finished (seen through REST) open each
finished task that has extra links and see them (name and target) on its Details tab. A failing test leaves a screenshot under /tmp."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.airflow_deployment import EXAMPLE_DAGS, _wait

pytestmark = [pytest.mark.deployment, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
EXAMPLES = sorted(path.stem for path in EXAMPLE_DAGS.glob("*.py"))
SCREENSHOTS = Path("/tmp")
NO_EXPORT_TASK = {"example_dicom_guide_analyses"}  # its tasks only query: no extra links


@pytest.fixture(scope="module")
def browser(deployment) -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install-standins.sh installs Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed (pyproject's test extra): {exc}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def logged_in(browser, deployment):
    """A browser context logged in through the UI's login form (SimpleAuthManager)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{deployment.api_url}/")
    page.wait_for_load_state("networkidle")
    try:
        page.get_by_label(re.compile("username", re.I)).fill(deployment.username)
        page.get_by_label(re.compile("password", re.I)).fill(deployment.password)
        page.get_by_role("button", name=re.compile("sign in|log ?in", re.I)).click()
        page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"), timeout=30_000)
        page.wait_for_load_state("networkidle")
    except Exception:
        shot(page, "login")
        raise
    yield context
    context.close()


def shot(page, name: str) -> Path:
    path = SCREENSHOTS / f"deploy-ui-{name}.png"
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception:  # noqa: BLE001 - the screenshot is a help, never the failure
        pass
    return path


@pytest.fixture
def page(logged_in):
    page = logged_in.new_page()
    page.set_default_timeout(30_000)
    yield page
    page.close()


def open_trigger_form(page, deployment, dag_id: str):
    page.goto(f"{deployment.api_url}/dags/{dag_id}")
    page.wait_for_load_state("networkidle")
    page.get_by_role("button", name=re.compile(r"^\s*Trigger( Dag)?\s*$", re.I)).first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def submit_form_with_defaults(page, deployment, dag_id: str) -> str:
    """Open the trigger form, check Trigger is enabled as the form opens, submit; the new run's id."""
    from playwright.sync_api import expect

    if deployment.api("GET", f"/dags/{dag_id}")["is_paused"]:
        deployment.unpause(dag_id)
    before = {r["dag_run_id"] for r in deployment.runs(dag_id)}
    dialog = open_trigger_form(page, deployment, dag_id)
    submit = dialog.get_by_role("button", name=re.compile(r"^\s*Trigger\s*$", re.I))
    page.wait_for_timeout(1000)  # the form validates its fields once rendered
    expect(submit).to_be_enabled(timeout=10_000)
    submit.click()
    new = _wait(lambda: [r for r in deployment.runs(dag_id)
                         if r["dag_run_id"] not in before and r["run_type"] == "manual"], 30, 0.5)
    assert new, "submitting the form created no run"
    return new[0]["dag_run_id"]


@pytest.fixture(scope="module")
def form_runs(logged_in, deployment) -> dict[str, str | BaseException]:
    """Every example DAG's form submitted with its defaults, one after the other (the runs then go on
    side by side): dag_id -> run id, or what went wrong (raised by that DAG's test)."""
    page = logged_in.new_page()
    page.set_default_timeout(30_000)
    runs: dict[str, str | BaseException] = {}
    for dag_id in EXAMPLES:
        try:
            runs[dag_id] = submit_form_with_defaults(page, deployment, dag_id)
        except Exception as exc:  # noqa: BLE001 - reported by the DAG's own test
            shot(page, f"trigger-{dag_id}")
            runs[dag_id] = exc
    page.close()
    return runs


@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_trigger_form_with_defaults_and_extra_links(page, deployment, form_runs, dag_id):
    from playwright.sync_api import expect

    if isinstance(form_runs[dag_id], BaseException):
        raise form_runs[dag_id]
    run_id = form_runs[dag_id]
    run = deployment.wait_run(dag_id, run_id, 400)
    assert run["state"] == "success", deployment.failure_report(dag_id, run_id)

    # The links a finished task has (the REST endpoint the UI itself reads), then the UI's Details tab
    # of that task instance, where Airflow 3.3 shows them under "Extra Links".
    linked = {}
    for ti in deployment.task_instances(dag_id, run_id):
        if ti["state"] != "success" or ti["map_index"] >= 0:
            continue
        urls = {name: url for name, url in deployment.links(dag_id, run_id, ti["task_id"]).items() if url}
        if urls:
            linked[ti["task_id"]] = urls
    if dag_id not in NO_EXPORT_TASK:
        assert linked, f"no finished task of {dag_id} has an extra link"
    for task_id, urls in linked.items():
        try:
            page.goto(f"{deployment.api_url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/details")
            page.wait_for_load_state("networkidle")
            expect(page.get_by_text("Extra Links", exact=True)).to_be_visible(timeout=15_000)
            for name, url in urls.items():
                link = page.get_by_role("link", name=name, exact=True)
                expect(link).to_be_visible(timeout=15_000)
                expect(link).to_have_attribute("href", url)
        except Exception:
            shot(page, f"links-{dag_id}-{task_id}")
            raise
