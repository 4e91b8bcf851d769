"""The MLflow UI as a user sees it, in a real browser (Debian's Chromium through Playwright).

Several harness runs in one store, `harness ui` serving it: the printed deep link opens the
runs table with the compared columns, a run page shows its dataset, logged model and step
charts, the model page its signature, the compare view the param that differs. A failing
test leaves a screenshot of the page it was on in `test-artifacts/ui/`.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.config.loader import load_config
from experiments.run.run import RunResult, run_experiment
from tests.experiments.configs import write_config
from tests.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "ui"
playwright = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs Playwright: pip install -e '.[dev]'"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="the browser test needs Debian's Chromium: apt-get install -y chromium",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[RunResult]]]:
    """Two runs that differ in the learning rate, in a store of their own."""
    tmp = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    results = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        for lr in (0.01, 0.003):
            changes = {
                "optimizer.learning_rate": lr,
                "tracking.experiment": "browser",
                "tracking.tensorboard_dir": str(tmp / "tb"),
                "tracking.system_metrics_every_s": 0.5,
            }
            config = load_config(write_config(tmp, changes))
            results.append(run_experiment(config, tracking_uri=uri, command="harness run tiny"))
    yield uri, results


@pytest.fixture(scope="module")
def ui(store: tuple[str, list[RunResult]]) -> Iterator[str]:
    """`harness ui` on the store; the runs-view address it printed."""
    uri, _ = store
    harness = Path(sys.executable).with_name("harness")
    port = _free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server_log = (ARTIFACTS / "harness-ui.log").open("w")  # kept when a test fails
    server = subprocess.Popen(
        [str(harness), "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=server_log,
        text=True,
    )
    try:
        assert server.stdout is not None
        started = time.monotonic()
        line = server.stdout.readline()  # printed once the server answers
        assert line.startswith("MLflow UI for "), line
        assert time.monotonic() - started < 90
        yield line.rsplit(": ", 1)[1].strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
        server_log.close()


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[object]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 2400, "height": 1000})
        try:
            yield tab
        finally:
            report = getattr(request.node, "rep_call", None)  # set in tests/conftest.py
            if report is None or report.failed:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
            browser.close()


def _text(tab, *, contains: str, timeout_s: float = 30) -> str:
    """The page's text once it shows `contains` (the UI loads its data after the page)."""
    tab.get_by_text(contains, exact=False).first.wait_for(timeout=timeout_s * 1000)
    return tab.inner_text("body")


def test_the_printed_link_opens_the_runs_table_with_the_compared_columns(ui, store, page):
    uri, results = store
    assert "workflowType=machine_learning" in ui
    names = [MlflowClient(uri).get_run(r.run_id).info.run_name for r in results]
    page.goto(ui)
    text = _text(page, contains=names[0])
    assert names[1] in text and "Model training" in text
    assert "Error loading shared view" not in text
    # The compared columns are there without picking them: params and final metrics.
    header = {cell.strip() for cell in page.locator("[role=columnheader]").all_inner_texts()}
    header |= {part for cell in header for part in cell.split()}
    for column in ("Dataset", "val_loss", "val_accuracy", "loss", "optimizer.learning_rate"):
        assert column in header, (column, sorted(header))
    assert page.get_by_text(re.compile(r"digits \([0-9a-f]+\)")).count() >= 2  # each run's data


def test_a_run_page_shows_its_dataset_logged_model_and_step_charts(ui, store, page):
    _, results = store
    run = results[0]
    address = ui.split("/#/")[0]
    page.goto(re.sub(r"^http://[^/]+", address, run.run_url))
    text = _text(page, contains="Logged models")
    assert "digits" in text and "Training" in text  # the dataset input
    assert "harness run tiny" in text  # the description
    assert "harness.engine" in text and "harness.host" in text
    page.goto(re.sub(r"^http://[^/]+", address, run.run_url.replace("?", "/model-metrics?")))
    charts = _text(page, contains="(step/batch_loss)")  # a chart's legend: run (metric key)
    # The step section's charts are titled by the batch values, not like the epoch charts.
    assert {"batch_loss", "batch_accuracy"} <= set(charts.splitlines()), charts
    page.goto(re.sub(r"^http://[^/]+", address, run.run_url.replace("?", "/system-metrics?")))
    assert "cpu_utilization_percentage" in _text(page, contains="cpu_utilization")


def test_the_models_tab_and_the_model_page_with_its_signature(ui, store, page):
    uri, results = store
    run = MlflowClient(uri).get_run(results[0].run_id)
    (output,) = run.outputs.model_outputs
    address = ui.split("/#/")[0]
    models = f"{address}/#/experiments/{results[0].experiment_id}/models"
    page.goto(f"{models}?workflowType=machine_learning")  # the experiment's Models tab
    assert run.info.run_name in _text(page, contains=run.info.run_name)
    base = f"{models}/{output.model_id}"
    page.goto(f"{base}?workflowType=machine_learning")
    text = _text(page, contains="val_loss")
    assert "Ready" in text and "optimizer.learning_rate" in text
    page.goto(f"{base}/artifacts?workflowType=machine_learning")
    page.get_by_text("MLmodel", exact=True).first.click()
    mlmodel = _text(page, contains="signature")
    assert "inputs" in mlmodel and "tensor" in mlmodel.lower()
    assert output.model_id in mlmodel


def test_the_compare_view_lists_the_param_that_differs(ui, store, page):
    _, results = store
    address = ui.split("/#/")[0]
    ids = ",".join(f'"{r.run_id}"' for r in results)
    page.goto(f'{address}/#/compare-runs?runs=[{ids}]&experiments=["{results[0].experiment_id}"]')
    _text(page, contains="Show diff only")
    same = page.locator("tr", has_text="trainer.engine")
    playwright.expect(same).not_to_have_count(0)  # listed before filtering
    page.get_by_text("Show diff only").first.click()
    row = page.locator("tr", has_text="optimizer.learning_rate").first.inner_text()
    assert "0.01" in row and "0.003" in row
    playwright.expect(same).to_have_count(0)  # the same in both runs: hidden


def teardown_module() -> None:
    if ARTIFACTS.exists() and not any(ARTIFACTS.glob("*.png")):
        shutil.rmtree(ARTIFACTS)  # nothing failed: no artifacts to keep
