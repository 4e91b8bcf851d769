"""How a run's metric points reach MLflow without the training thread waiting.

`sender`: a daemon thread batches the points and retries failed sends; `writer`: writes a
batch in that thread, or hands it to `process`, a low-priority child process that writes it,
once MLflow's own work is worth moving off the training process; `journal`: every point on
local disk until MLflow has it; `replay`: what journals hold, delivered to a resumed run or
from runs a killed process left behind.

May import: mlflow, psutil, `tracking.mlflow.retry`, `tracking.mlflow.runs` (replay).
"""
