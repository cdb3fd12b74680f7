"""Voronoi featurizer: ASE ``Atoms`` -> :class:`Graph` of SCANN neighbours (docs/model-spec.md §2).

The names load on first use (:mod:`scannet.lazy`): a config reads :class:`FeaturizerConfig` without SciPy.
"""

from scannet.lazy import lazy_exports

_EXPORTS = {
    "FeaturizerConfig": "config",
    "Facets": "facets",
    "Graph": "neighbors",
    "compute_facets": "pipeline",
    "featurize": "pipeline",
    "featurize_each": "pipeline",
    "featurize_many": "pipeline",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
