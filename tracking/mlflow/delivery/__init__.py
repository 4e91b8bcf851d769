"""How a run's metric points reach MLflow without the training thread waiting.

`sender`: a daemon thread batches the points and retries failed sends; `writer`: writes a
batch in that thread, or hands it to `process`, a low-priority child process that writes it,
once MLflow's own work is worth moving off the training process; `spill`: what could not be
sent at the end is saved to a file and replayed by a resume.

May import: mlflow, `tracking.mlflow.retry`. Nothing here knows about runs beyond an id.
"""
