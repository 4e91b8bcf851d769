"""Comparing runs: the MLflow UI server, its addresses, its runs-table view, the CLI tables.

`server`: `harness ui`; `links`: addresses in the UI; `compare_view`: the runs table's shared
view (columns, best first); `runs_table` and `study_table`: `harness runs` (`--study`);
`compare`: `harness compare`; `text_table`: tables fitted to the terminal; `run_ids`: short
ids and unique prefixes; `hints`: commands printed as the user can type them.

May import: rich, pandas, requests, `tracking.mlflow` (queries),
`experiments.tracking_setup`. Never `experiments.run` (a run publishes its view here).
"""
