"""Errors that name the offending key, file or field."""


class ConfigError(ValueError):
  """A config value is outside what the code accepts; the message names the key."""


class DataError(ValueError):
  """An input file or split is malformed; the message names the file and field."""


class CheckpointError(RuntimeError):
  """Checkpoints exist but none restores; the message names them and what to do."""
