"""SCANN / SCANN+ models on packed graph batches."""

from scannet.lazy import lazy_exports

_EXPORTS = {
    "PRESETS": "config",
    "SCANNConfig": "config",
    "preset": "config",
    "SCANN": "scann",
    "SCANNOutput": "scann",
    "count_parameters": "scann",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # torch only when a model class is used

__all__ = sorted(_EXPORTS)
