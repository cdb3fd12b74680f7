"""SCANNet: SCANN / SCANN+ self-consistent attention networks for molecules and materials."""

__version__ = "0.1.0"


def load(path=None, device: str = "cpu", precision: str = "fp32"):
    """Load a trained model as a :class:`scannet.predictor.Predictor`: a checkpoint file, the name of a shipped
    model (``scannet.pretrained.names()``), an MLflow model URI with the platform, or ``None`` for the default
    shipped model (``scannet.pretrained.DEFAULT_MODEL``). ``precision="bf16"`` runs the model under bfloat16
    autocast (faster on CPUs with AMX/AVX-512-BF16; figures: benchmarks/README.md)."""
    from scannet.predictor import load as _load

    return _load(path, device, precision)
