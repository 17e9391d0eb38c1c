"""The methods and a factory that builds one from a config name, as open_clip does from a model name."""

from .base import FerModel, Output
from .factory import METHODS, create_model, load_config, load_model, save_model
from .mlper import MLPER
from .mpa_fer import MPAFER
from .zeroshot import ZeroShotCLIP

__all__ = [
    "FerModel",
    "Output",
    "METHODS",
    "create_model",
    "load_config",
    "load_model",
    "save_model",
    "MLPER",
    "MPAFER",
    "ZeroShotCLIP",
]
