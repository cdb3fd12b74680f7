"""SCANN / SCANN+ models on packed graph batches."""

from scannet.model.config import PRESETS, SCANNConfig, preset
from scannet.model.scann import SCANN, SCANNOutput, count_parameters

__all__ = ["PRESETS", "SCANN", "SCANNConfig", "SCANNOutput", "count_parameters", "preset"]
