"""A trained detector on disk: weights plus the metadata needed to use them safely."""

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bastion.detector.features import FEATURES_VERSION, TOOL_VOCABULARY, VECTOR_NAMES
from bastion.detector.model import SequenceModel


@dataclass
class Checkpoint:
    """Model weights, the generic alerting threshold, per-agent thresholds, and what the model was trained on
    (`training`: data source, window, agents, sessions, calibration)."""

    state_dict: dict[str, torch.Tensor]
    hidden_size: int
    threshold: float
    training: dict[str, Any] = field(default_factory=dict)
    agent_thresholds: dict[str, float] = field(default_factory=dict)
    features_version: int = FEATURES_VERSION
    vocabulary: list[str] = field(default_factory=lambda: list(TOOL_VOCABULARY))
    feature_names: list[str] = field(default_factory=lambda: list(VECTOR_NAMES))
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def build_model(self, device: torch.device) -> SequenceModel:
        """A model on `device` holding these weights, in evaluation mode."""
        model = SequenceModel(hidden_size=self.hidden_size)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write the checkpoint with torch.save (weights on the CPU, metadata as plain values), atomically: a
    gateway watching the file never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {name: tensor.detach().cpu() for name, tensor in checkpoint.state_dict.items()},
        "hidden_size": checkpoint.hidden_size,
        "threshold": checkpoint.threshold,
        "training": checkpoint.training,
        "agent_thresholds": checkpoint.agent_thresholds,
        "features_version": checkpoint.features_version,
        "vocabulary": checkpoint.vocabulary,
        "feature_names": checkpoint.feature_names,
        "created_at": checkpoint.created_at,
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint; refuse one made for a different feature layout."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint = Checkpoint(**payload)
    current = (FEATURES_VERSION, list(TOOL_VOCABULARY), list(VECTOR_NAMES))
    found = (checkpoint.features_version, checkpoint.vocabulary, checkpoint.feature_names)
    if found != current:
        raise ValueError(
            f"detector checkpoint {path} was trained for features version {checkpoint.features_version}, "
            f"this build extracts version {FEATURES_VERSION}: delete it or retrain with bastion.detector.train"
        )
    return checkpoint
