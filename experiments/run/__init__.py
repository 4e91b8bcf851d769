"""One tracked run: a config becomes a trained model in MLflow and TensorBoard.

`plan`: the numbers the config and data imply (`RunPlan`), computed once; `prepare`:
everything bad input can break, resolved before a run exists; `run`: the sinks, the loop, the
models logged at the end; `resume`: continue a run from its checkpoint; `export`: the last
and best models; `record`: what a run says about itself; `checkpoints`, `schedules`,
`signals`: the config's checkpoint policy and learning rate, and signals while a run is
closed.

`commands`: the bodies of `harness run --dry-run` and `harness resume`, and what a finished run
prints.

May import: `harness`, `tracking`, `experiments.config`, `experiments.zoo`, `experiments.ui`,
`experiments.tracking_setup`, `experiments.quiet`.
"""
