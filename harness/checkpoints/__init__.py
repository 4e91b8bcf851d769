"""Checkpoints: what the loop saves, when, and how it lies on disk.

- `format`: one checkpoint directory (`state.bin` and `manifest.json`), and how it verifies;
  `plain`: the state as plain data (JSON and raw arrays), which loading cannot run as code.
- `store`: `CheckpointStore`, a run's checkpoints: written aside and renamed, off the training
  thread; retention; the newest intact one.
- `policy`: `Checkpointing`, when the loop saves, and the `Saver` that applies it.
- `restore`: a checkpoint's weights back into a model (the best model's export).

May import: `harness.state`, NumPy. The loop imports this package, never the other way.
"""

from harness.checkpoints.format import CheckpointInfo, DamagedCheckpoint, PickledCheckpoint
from harness.checkpoints.plain import NotPlainData
from harness.checkpoints.policy import Checkpointing, Saver
from harness.checkpoints.restore import load_weights
from harness.checkpoints.store import CheckpointsFailing, CheckpointStore

__all__ = [
    "CheckpointInfo",
    "CheckpointStore",
    "CheckpointsFailing",
    "Checkpointing",
    "DamagedCheckpoint",
    "NotPlainData",
    "PickledCheckpoint",
    "Saver",
    "load_weights",
]
