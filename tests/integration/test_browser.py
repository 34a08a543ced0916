"""The UIs in a real browser: start the local stack, deploy the pipeline, open the Prefect UI in headless
Chromium (Debian's `chromium`, driven by Playwright; no browser download), start a run of the deployment from
its custom-run form with `dpo.beta` changed to 0.2, wait until it completes, then find the run in the MLflow
UI: the parent run with its stage runs nested under it, and the changed parameter.

Screenshots of every step go to test-artifacts/browser/ (kept by CI); on a failure also the page's HTML and
the stack's logs. Needs /usr/bin/chromium (`.ci/install-browser.sh`) and the `playwright` package (the test
extra).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.stack import Stack
from tests.integration.browserutil import BROWSER_MARKS, save_failure
from tests.integration.stackutil import deploy, running_stack

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # pragma: no cover - the test extra installs it
    pass
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
STAGES = ["prepare_data", "base_model", "sft", "dpo", "evaluate", "benchmarks", "compare", "register"]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT = 360

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as st:
        yield st


@pytest.fixture
def shots() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


def test_run_from_prefect_ui_and_find_it_in_mlflow_ui(stack: Stack, browser: Browser, shots: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "deployed"
    # A cron that won't fire during the test: the only pipeline run is the one started from the UI.
    deploy(stack, f"run.output_dir={out}", cron="0 3 1 1 *")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        flow_run_id = start_run_from_prefect_ui(page, stack, shots)
        wait_completed_in_prefect_ui(page, stack, flow_run_id, shots)
        summary = json.loads((out / "summary.json").read_text())
        find_run_in_mlflow_ui(page, stack, summary, shots)
    except BaseException:
        save_failure(page, stack, shots)
        raise
    finally:
        context.close()

    from mlflow import MlflowClient  # the UI showed it; the server agrees

    parent = MlflowClient(stack.urls["mlflow"]).get_run(summary["parent_run_id"])
    assert parent.data.params["dpo.beta"] == "0.2"
    assert parent.data.params["run.output_dir"] == str(out)


def form_property(scope, label: str):  # noqa: ANN001, ANN201 - Playwright Page/Locator
    """One field of Prefect's schema form (a nested pydantic model renders as nested properties)."""
    return scope.locator(".schema-form-property:has(> .p-label__header "
                         f".schema-form-property__label:text-is('{label} (Optional)'))")


def start_run_from_prefect_ui(page: Page, stack: Stack, shots: Path) -> str:
    """Deployments -> scheduled -> custom run form; change dpo.beta to 0.2, name the run, submit.
    Returns the new flow run's id (from the run's page, reached through the deployment's Runs tab)."""
    prefect = stack.urls["prefect"]
    page.goto(f"{prefect}/deployments")
    deployment = page.get_by_role("link", name="scheduled", exact=True)
    expect(deployment).to_be_visible()
    expect(page.get_by_text("alignment-pipeline").first).to_be_visible()
    page.screenshot(path=str(shots / "01-prefect-deployments.png"))
    deployment.click()
    page.wait_for_url("**/deployments/deployment/*")
    deployment_id = page.url.split("/deployments/deployment/")[1].split("?")[0].split("/")[0]
    expect(page.get_by_text("flows/pipeline.py:alignment_pipeline")).to_be_visible()
    page.screenshot(path=str(shots / "02-prefect-deployment.png"))

    page.goto(f"{prefect}/deployments/deployment/{deployment_id}/run")  # Run -> Custom run
    run_name = f"browser-{uuid.uuid4().hex[:8]}"
    name_input = page.locator(".flow-run-name-input input")
    name_input.fill(run_name)
    beta = form_property(form_property(page, "Dpo"), "Beta").locator("> .p-label__body input")
    expect(beta).to_have_count(1)
    expect(beta).to_have_value("0.1")  # the deployment's default parameter, rendered in the form
    beta.fill("0.2")
    expect(beta).to_have_value("0.2")
    beta.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "03-prefect-custom-run-form.png"))
    page.get_by_role("button", name="Submit", exact=True).click()

    # The submit creates the run through the API; where the UI goes next (the deployment's Runs tab, or
    # the run itself) varies with load, so find the run by its unique name and open its page directly.
    flow_run_id = wait_run_named(stack, run_name, page)
    page.screenshot(path=str(shots / "04-prefect-run-created.png"))
    page.goto(f"{prefect}/runs/flow-run/{flow_run_id}")
    expect(page.get_by_text(run_name).first).to_be_visible()
    params = api_get(stack, f"/flow_runs/{flow_run_id}")["parameters"]
    assert params["config"]["dpo"]["beta"] == 0.2, params["config"]["dpo"]
    return flow_run_id


def wait_run_named(stack: Stack, run_name: str, page: Page, timeout: float = 120) -> str:
    """The id of the flow run the UI created under `run_name` (polled through the API)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api_post(stack, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}})
        if found:
            return found[0]["id"]
        time.sleep(1)
    text = page.locator("body").inner_text()[:2000]
    raise AssertionError(f"the Prefect UI created no flow run named {run_name} in {timeout:.0f} s; "
                         f"the page ({page.url}) shows:\n{text}")


def wait_completed_in_prefect_ui(page: Page, stack: Stack, flow_run_id: str, shots: Path) -> None:
    """Poll the API until the run is final (the worker picks it up within ~15 s), then check its page."""
    deadline = time.monotonic() + RUN_TIMEOUT
    state = None
    while time.monotonic() < deadline:
        state = api_get(stack, f"/flow_runs/{flow_run_id}")["state_type"]
        if state in FINAL:
            break
        time.sleep(3)
    page.reload()
    badge = page.locator(".state-badge").first
    expect(badge).to_be_visible()
    page.wait_for_timeout(2_000)  # the run graph is a canvas drawn after the page settles (screenshot only)
    page.screenshot(path=str(shots / "05-prefect-flow-run.png"))
    assert state == "COMPLETED", f"flow run {flow_run_id} ended {state} (or timed out); see {shots}"
    expect(badge).to_have_text("Completed")


def find_run_in_mlflow_ui(page: Page, stack: Stack, summary: dict, shots: Path) -> None:
    """Experiment -> Training runs: the parent (`pipeline-dpo`, newest) expands into its stage runs; on the
    parent's page the parameter changed in the Prefect form shows 0.2."""
    mlflow = stack.urls["mlflow"]
    experiment_id, parent_id = summary["experiment_id"], summary["parent_run_id"]
    page.goto(f"{mlflow}/#/experiments/{experiment_id}/runs")
    parent_link = page.get_by_role("link", name="pipeline-dpo", exact=True)
    expect(parent_link).to_have_count(1)
    expect(parent_link).to_have_attribute("href", f"#/experiments/{experiment_id}/runs/{parent_id}")
    close_assistant(page)
    for stage in STAGES:  # collapsed: only the parent row is there
        expect(page.get_by_role("link", name=stage, exact=True)).to_have_count(0)
    page.screenshot(path=str(shots / "06-mlflow-runs.png"))
    parent_row = page.locator(".ag-row", has=parent_link)
    parent_row.locator("[col-id='attributes.`Run Name`'] button").first.click()  # the [+] before the name
    for stage in STAGES:
        expect(page.get_by_role("link", name=stage, exact=True)).to_be_visible()
        expect(page.get_by_role("link", name=stage, exact=True)).to_have_attribute(
            "href", f"#/experiments/{experiment_id}/runs/{summary['stage_runs'][stage]}")
    page.screenshot(path=str(shots / "07-mlflow-parent-with-children.png"))

    parent_link.click()
    page.wait_for_url(f"**/runs/{parent_id}*")
    close_assistant(page)
    expect(page.get_by_role("heading", name="pipeline-dpo")).to_be_visible()
    search = page.get_by_placeholder("Search parameters")
    search.fill("dpo.beta")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="dpo.beta", exact=True))
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell").nth(1)).to_have_text("0.2")
    search.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "08-mlflow-parent-run-params.png"))




def close_assistant(page: Page) -> None:
    """MLflow 3.17 opens an assistant side panel on first visit; it covers part of the table."""
    close = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
    try:
        close.click(timeout=3_000)
    except Exception:  # noqa: BLE001 - not shown (already closed): nothing to do
        pass


def api_get(stack: Stack, path: str) -> dict:
    with urllib.request.urlopen(stack.urls["prefect_api"] + path, timeout=10) as resp:
        return json.loads(resp.read())


def api_post(stack: Stack, path: str, body: dict) -> list | dict:
    request = urllib.request.Request(stack.urls["prefect_api"] + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())
