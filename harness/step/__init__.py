"""The step: how one batch becomes an optimizer update, identically in both engines.

One compiled call (`compiled.build_train_function`) runs `steps_per_execution` batches.
For each batch:

1. The engine's one-batch step runs (`engines`): `fit` runs the model's own `train_step`
   (Keras's, or a user's override), `custom` our `tf.GradientTape` step (`gradient_tape`).
   Both compute the loss and its gradients and hand them to `optimizer.apply`.
2. `optimizer.apply` is the gradient pipeline (`gradients.GradientPipeline`) while the step
   is traced: it stands in front of the (inner, under loss scaling) optimizer's `apply`, so a
   user's own `train_step` goes through it too, without knowing. It sums replicas' gradients
   on entry (several devices), accumulates micro-batches, measures the global norm, and
   guards against NaN / Inf, then calls the real `apply`, where Keras clips and decays. The
   patching itself lives in `harness.keras_internals`.
3. The rate the update applies was read once, before it, and is the one logged.
4. After the update, in the same compiled call, the EMA of the weights (`ema.WeightAverage`)
   is updated, only if the optimizer did update (not for a micro-batch or a skipped step).
5. The call returns Keras's `logs` and a `StepOutputs` (`outputs`): the global step, the
   applied rate, the batch's own values and the pipeline's, read without waiting for them.

Keras's own `gradient_accumulation_steps` and `use_ema` are not used: Keras counts every
micro-batch in `optimizer.iterations` (so schedules, EMA and logged steps would advance per
micro-batch, not per update), and its EMA cannot skip an update that was not applied.

May import: keras, tensorflow, NumPy, `harness.keras_internals`, `harness.precision`,
`harness.state`, `harness.stopping`. Never `harness.loop` (the loop runs the step).
"""
