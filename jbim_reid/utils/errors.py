"""``DataError`` and ``ConfigError``: bad input data, and a bad config key or value.

The CLI prints either as one line and exits with code 2, as it does for ``fileio.CheckpointError`` (a
damaged, unsafe or mismatched checkpoint). ``ConfigError`` is re-exported by ``training.checks``, where
configs are loaded and checked; it lives here so that every layer can raise it.
"""

__all__ = ["DataError", "ConfigError"]


class DataError(ValueError):
    """Bad input data; the message names the file and what was expected."""


class ConfigError(ValueError):
    """A bad config file, key or value; the CLI prints it and exits with code 2."""
