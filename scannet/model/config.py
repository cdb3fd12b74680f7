"""The typed configuration of a SCANN / SCANN+ model (docs/model-spec.md §3, §4.6)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class SCANNConfig:
    """Every size and switch of the architecture; the model is built from this alone.

    Defaults are the QM9 SCANN+ configuration of the reference (configs/model_qm9.yaml), which has
    890,977 parameters with one target.
    """

    targets: tuple[str, ...] = ("homo",)  # one output head per target
    elements: tuple[int, ...] = (1, 6, 7, 8, 9)  # atomic numbers the model accepts (its vocabulary)
    max_atomic_number: int = 9  # embedding rows = max_atomic_number + 1 (the reference's n_atoms = 10)
    embedding_dim: int = 48  # E
    local_dim: int = 128  # d, width of the local-structure vectors
    global_dim: int = 128  # D, width of the global-attention keys/queries
    num_heads: int = 8  # H, local-attention heads; d_h = d / H
    num_blocks: int = 7  # L, local-attention blocks
    dense_out: int = 128  # width of each target head's hidden layer
    g_update: bool = True  # SCANN+ (edge geometry updated every block) vs SCANN
    num_gaussians: int = 20  # K, size of the distance and solid-angle bases
    gaussian_distance_max: float = 4.0  # Å, last distance centre (4 for molecules, 6 for crystals)
    gaussian_width: float = 0.5  # φ_k(x) = exp(-(x - μ_k)² / width²)
    use_ga_norm: bool = True  # L2-normalise the GA scores across atoms before the softmax
    embedding_dropout: float = 0.1  # after the embedding MLP (always on in training)
    ffn_dropout: float = 0.1  # inside every ResidualNorm
    attention_dropout: float = 0.0  # on the local-attention maps (0.05 with the reference's --use_drop)
    nonnegative_targets: tuple[str, ...] = ()  # targets passed through a straight-through ReLU (MP "e_b")

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("SCANNConfig.targets must name at least one target")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"SCANNConfig.targets has duplicates: {self.targets}")
        if self.local_dim % self.num_heads:
            raise ValueError(f"local_dim {self.local_dim} is not divisible by num_heads {self.num_heads}")
        if not self.elements or max(self.elements) > self.max_atomic_number or min(self.elements) < 1:
            raise ValueError(f"elements {self.elements} must lie in 1..max_atomic_number={self.max_atomic_number}")
        unknown = set(self.nonnegative_targets) - set(self.targets)
        if unknown:
            raise ValueError(f"nonnegative_targets {sorted(unknown)} are not among targets {self.targets}")

    @property
    def head_dim(self) -> int:
        return self.local_dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SCANNConfig:
        from scannet.typed_config import build

        return build(cls, data)

    def with_overrides(self, **overrides: Any) -> SCANNConfig:
        return replace(self, **overrides)


#: Named presets (docs/model-spec.md §3.9, §4.6). Applied as: dataclass defaults, then the preset, then overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "qm9-scann+": {},
    "qm9-scann": {"g_update": False},
    "mp2018-scann+": {
        "elements": tuple(range(1, 95)),
        "max_atomic_number": 94,
        "embedding_dim": 128,
        "num_blocks": 9,
        "gaussian_distance_max": 6.0,
    },
    "demo": {"local_dim": 64, "global_dim": 64, "dense_out": 64, "num_blocks": 3, "embedding_dim": 32},
}


def preset(name: str, **overrides: Any) -> SCANNConfig:
    """A config from a named preset plus explicit overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return SCANNConfig(**{**PRESETS[name], **overrides})
