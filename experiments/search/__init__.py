"""Hyperparameter search: an Optuna study over a config's `search:` section.

`start`: `harness search` and `harness worker`; `supervisor`: the slot loop, one trial
process per slot; `launcher`: how a trial process is started and watched (the seam another
launcher plugs into) and what it is told; `trial`: the trial process itself; `outcome`: how a
trial ended; `recovery`: trials whose process or supervisor is gone; `study`: the storage,
sampler and pruner; `space`: suggested values into a config; `slots`: `--devices`; `parent`:
the study's MLflow parent run; `optuna_internals`: the one door to Optuna's private pieces.

`summary`: what a search prints at its end.

May import: optuna, `experiments.config`, `experiments.run` (a trial is a run),
`experiments.ui` (links, hints and the runs view a search shows), `experiments.quiet`,
`tracking.mlflow`.
"""
