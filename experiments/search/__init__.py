"""Hyperparameter search: an Optuna study over a config's `search:` section.

`start`: `harness search` and `harness worker`; `supervisor`: the slot loop, one trial
process per slot; `launch/`: where trial processes run and how they are started and watched
(the launcher seam, this machine's `--devices` slots, a Ray cluster) and what a trial is
told; `trial`: the trial process itself; `outcome`: how a trial ended; `recovery`: trials
whose process or supervisor is gone; `study`: the storage, sampler and pruner; `space`:
suggested values into a config; `parent`: the study's MLflow parent run;
`optuna_internals`: the one door to Optuna's private pieces.

`summary`: what a search prints at its end.

May import: optuna, ray (in `launch/`, only when asked for), `experiments.config`,
`experiments.run` (a trial is a run), `experiments.ui` (links, hints and the runs view a
search shows), `experiments.quiet`, `tracking.mlflow`.
"""
