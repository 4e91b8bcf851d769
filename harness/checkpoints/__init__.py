"""Checkpoints: what the loop saves, when, and how it lies on disk.

- `format`: one checkpoint directory (`state.pkl` and `manifest.json`), and how it verifies.
- `store`: `CheckpointStore`, a run's checkpoints: written aside and renamed, off the training
  thread; retention; the newest intact one.
- `policy`: `Checkpointing`, when the loop saves, and the `Saver` that applies it.
- `restore`: a checkpoint's weights back into a model (the best model's export).

May import: `harness.state`, NumPy. The loop imports this package, never the other way.
"""

from harness.checkpoints.format import CheckpointInfo, DamagedCheckpoint
from harness.checkpoints.policy import Checkpointing, Saver
from harness.checkpoints.restore import load_weights
from harness.checkpoints.store import CheckpointStore

__all__ = [
    "CheckpointInfo",
    "CheckpointStore",
    "Checkpointing",
    "DamagedCheckpoint",
    "Saver",
    "load_weights",
]
