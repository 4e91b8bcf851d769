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
from typing import Any

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
def search(store: tuple[str, list[RunResult]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real search in the same store: 4 trials, the bad ones (a rate of 1e-6) pruned."""
    import optuna

    from experiments.search.start import run_search

    uri, _ = store
    tmp = tmp_path_factory.mktemp("ui-search")
    changes = {
        "trainer.epochs": 3,
        "tracking.experiment": "browser-search",
        "tracking.tensorboard_dir": str(tmp / "tb"),
        "tracking.system_metrics_every_s": 0,
        "search": {
            "metric": "val_accuracy",
            "direction": "maximize",
            "n_trials": 4,
            "seed": 5,  # the random sampler's order: good, good, good, bad (as in test_search)
            "sampler": "random",
            "pruner": {"name": "asha", "params": {"min_resource": 1, "reduction_factor": 2}},
            "space": {"optimizer.learning_rate": {"categorical": [1.0e-6, 0.05]}},
        },
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        result = run_search(
            load_config(write_config(tmp, changes)), devices="cpu:1", tracking_uri=uri
        )
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(
                str(tmp / "searches" / result.study / "journal.log")
            )
        )
        study = optuna.load_study(study_name=result.study, storage=storage)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.params, t.intermediate_values) for t in study.trials]
    return result, study, pruned


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
    page.set_viewport_size({"width": 1600, "height": 1000})  # an ordinary laptop screen
    page.goto(ui)
    text = _text(page, contains=names[0])
    assert names[1] in text and "Model training" in text
    assert "Error loading shared view" not in text
    # Sorted by the main metric (val_loss here), best first.
    losses = [r.history["val_loss"][-1] for r in results]
    best, other = (names[0], names[1]) if losses[0] <= losses[1] else (names[1], names[0])
    assert text.index(best) < text.index(other), text

    def header() -> set[str]:
        cells = {c.strip() for c in page.locator("[role=columnheader]").all_inner_texts()}
        return cells | {part for cell in cells for part in cell.split()}

    # MLflow's Assistant panel opens on a first visit; closed once (as the README says), the
    # browser remembers it.
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.first.click()
        page.wait_for_timeout(500)
    # The quality metrics are there without picking or scrolling them, then the params.
    for column in ("val_loss", "val_accuracy", "loss"):
        assert column in header(), (column, sorted(header()))
    page.set_viewport_size({"width": 2400, "height": 1000})
    page.wait_for_timeout(500)
    assert "optimizer.learning_rate" in header(), sorted(header())


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


def test_a_search_s_parent_reads_as_its_best_trial_and_a_pruned_trial_is_not_failed(
    ui, store, search, page
):
    uri, _ = store
    result, study, pruned = search
    client = MlflowClient(uri)
    address = ui.split("/#/")[0]
    runs_view = f"{address}/#/experiments/{result.experiment_id}/runs"
    page.goto(f"{runs_view}?workflowType=machine_learning&viewStateShareKey=harness-compare")
    text = _text(page, contains=f"search {result.study}")
    assert "Sort: val_accuracy" in text  # the search's metric, best first
    # The parent's row carries the best trial's final metrics, as that trial's row would.
    best_run = client.get_run(study.best_trial.user_attrs["harness.run_id"])
    # The grid draws a row in parts (pinned name, scrolled columns): all parts of its index.
    named = page.locator("[role=row]", has_text=f"search {result.study}").first
    index = named.get_attribute("row-index")
    parent = " ".join(page.locator(f'[role=row][row-index="{index}"]').all_inner_texts())
    shown = f"{best_run.data.metrics['val_accuracy']:.3f}"[:4]
    assert shown in parent, parent
    # Its page: the search's settings as params, and a description naming the best trial.
    page.goto(f"{runs_view}/{result.parent_run_id}?workflowType=machine_learning")
    about = _text(page, contains="search.sampler")
    assert "space.optimizer.learning_rate" in about
    assert f"Best of 4 finished trials: trial {study.best_trial.number}" in about
    # A pruned trial's run ends FINISHED, named so: not shown as a failure.
    run = client.get_run(pruned[0].user_attrs["harness.run_id"])
    page.goto(f"{runs_view}/{run.info.run_id}?workflowType=machine_learning")
    status = _text(page, contains="(pruned)")
    assert "Finished" in status and "Failed" not in status


def teardown_module() -> None:
    if ARTIFACTS.exists() and not any(ARTIFACTS.glob("*.png")):
        shutil.rmtree(ARTIFACTS)  # nothing failed: no artifacts to keep
