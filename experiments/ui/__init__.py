"""Comparing runs: the MLflow UI server, its addresses, its runs-table view, the CLI table.

May import: rich, pandas, requests, `tracking.mlflow` (queries),
`experiments.tracking_setup`. Never `experiments.run` (a run publishes its view here).
"""
