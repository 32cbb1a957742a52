"""``DataError``: bad input data (a damaged or duplicate image, a bad dataset layout).

The CLI prints it as one line and exits with code 2, as it does for ``training.checks.ConfigError`` (a bad config
key or value) and ``fileio.CheckpointError`` (a damaged, unsafe or mismatched checkpoint).
"""

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data; the message names the file and what was expected."""
