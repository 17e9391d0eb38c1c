"""Errors a user can act on. Each message names what was wrong and what to do."""


class FerError(Exception):
    """Base class for every error ros_fer raises on purpose."""


class ConfigError(FerError, ValueError):
    """A config, label set or prompt file is missing, unknown or inconsistent."""


class WeightsUnavailableError(FerError, RuntimeError):
    """Pretrained weights could not be fetched or read. `backbone` names the model whose weights are missing;
    each front door adds how a local weight file is given there (`with_hint`), since only it knows its flags."""

    def __init__(self, message: str, backbone: str = ""):
        super().__init__(message)
        self.backbone = backbone

    def with_hint(self, hint: str) -> str:
        """The message and a front door's suggestion, `{backbone}` filled in."""
        return f"{self} {hint.format(backbone=self.backbone or 'NAME')}"


class BankMismatchError(FerError, ValueError):
    """A text bank does not belong to the model it is used with."""


class CheckpointError(FerError, ValueError):
    """A checkpoint file is unreadable or does not fit the model."""


class InputShapeError(FerError, ValueError):
    """A tensor handed to a model has the wrong shape."""
