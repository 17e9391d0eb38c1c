"""Errors a user can act on. Each message names what was wrong and what to do."""


class FerError(Exception):
    """Base class for every error ros_fer raises on purpose."""


class ConfigError(FerError, ValueError):
    """A config, label set or prompt file is missing, unknown or inconsistent."""


class WeightsUnavailableError(FerError, RuntimeError):
    """Pretrained weights could not be fetched or read."""


class BankMismatchError(FerError, ValueError):
    """A text bank does not belong to the model it is used with."""


class CheckpointError(FerError, ValueError):
    """A checkpoint file is unreadable or does not fit the model."""


class InputShapeError(FerError, ValueError):
    """A tensor handed to a model has the wrong shape."""
