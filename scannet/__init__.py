"""SCANNet: SCANN / SCANN+ self-consistent attention networks for molecules and materials."""

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """Load a trained model checkpoint as a :class:`scannet.predictor.Predictor`."""
    from scannet.predictor import load as _load

    return _load(path, device)
