"""Checkpoints: what the loop saves, when, and how it lies on disk."""

from harness.checkpoints.store import (
    CheckpointInfo,
    Checkpointing,
    CheckpointStore,
    DamagedCheckpoint,
)

__all__ = ["CheckpointInfo", "CheckpointStore", "Checkpointing", "DamagedCheckpoint"]
