"""The folder of a study's ensemble, as the study writes it (:mod:`scannet_platform.tune.driver`) and a screen
reads it (:mod:`scannet_platform.screen.models`): ``ensemble.json`` with the member checkpoints beside it."""

ENSEMBLE_FILE = "ensemble.json"


STD_SCALE_KEY = "std_scale"  # in ENSEMBLE_FILE: target -> the factor of the members' standard deviation
