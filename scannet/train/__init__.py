"""The plain (Ray-free) training loop: datasets, schedules, trainer."""

from scannet.lazy import lazy_exports

_EXPORTS = {
    "GraphDataset": "data",
    "make_loader": "data",
    "LearningRateSchedule": "schedule",
    "EpochRecord": "trainer",
    "History": "trainer",
    "TrainConfig": "config",
    "Trainer": "trainer",
    "seed_everything": "trainer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # torch only when the trainer is used
__all__ = sorted(_EXPORTS)

