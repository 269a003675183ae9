"""Errors that reach a user as one line, never as a traceback."""


class UserError(Exception):
    """A mistake the user can fix: bad config, missing data, bad command line.

    The CLI prints ``error: <message>`` and exits with status 2.
    """


class ConfigError(UserError):
    """An invalid configuration, refused before any training starts."""


class DataError(UserError):
    """A data set that is missing, incomplete or corrupt; the message says how to get it."""


class Interrupted(UserError):
    """The user interrupted a run (Ctrl-C); the CLI exits with status 130 after the one line."""

    exit_status = 130


class DivergenceError(UserError):
    """Training produced NaN or infinite weights; the message says where (epoch, samples, seeds, layer)."""
