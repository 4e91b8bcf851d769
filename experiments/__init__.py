"""The application: configs, runs, searches, the MLflow UI helpers and the built-in models.

- `cli`: the `harness` command; `errors`: bad input (one line, exit status 2);
  `tracking_setup`: where runs are tracked (the URI, the store and its retry policy, tags).
- `config/`: the YAML config, its schema and how it is loaded and explained.
- `run/`: one tracked run: plan, prepare, train and log, resume, export.
- `search/`: an Optuna study, one trial process per slot, on one machine or several.
- `ui/`: the MLflow UI, its links and views, and the runs table.
- `zoo/`: models, data sets, optimizers, losses, metrics, callbacks by name.

May import: `harness`, `tracking` and the libraries; the composition root of the project.
"""
