"""Errors the CLI turns into one clear line (exit 1), or a usage message (exit 2)."""


class WeightlabError(Exception):
    """A failure the user can act on; the message is the whole story."""

    exit_code = 1


class UsageError(WeightlabError):
    """Bad arguments or options: a value outside its range, a missing option."""

    exit_code = 2


class UnknownComponentError(UsageError):
    pass


class DuplicateComponentError(UsageError):
    pass


class ParamError(UsageError):
    pass


class DataError(WeightlabError):
    pass


class CheckpointError(WeightlabError):
    pass


class IncompatibleModelsError(WeightlabError):
    pass


class TrainingInterrupted(WeightlabError):
    """Training stopped on SIGTERM/SIGINT after writing its resume state."""

    exit_code = 130
