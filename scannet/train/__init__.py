"""The plain (Ray-free) training loop: datasets, schedules, trainer."""

from scannet.train.data import GraphDataset, make_loader
from scannet.train.schedule import LearningRateSchedule
from scannet.train.trainer import EpochRecord, History, TrainConfig, Trainer, seed_everything

__all__ = [
    "EpochRecord",
    "GraphDataset",
    "History",
    "LearningRateSchedule",
    "TrainConfig",
    "Trainer",
    "make_loader",
    "seed_everything",
]
