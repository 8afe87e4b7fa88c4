"""Exceptions shared by every layer of dal_widgets."""


class DalError(Exception):
  """Base class of every error raised on purpose by dal_widgets."""


class ParameterError(DalError, ValueError):
  """An argument has the wrong type, shape, range or value.

  The message names the argument, what was expected and what arrived.
  """


class AudioError(DalError, ValueError):
  """Audio that cannot be read or used (unreadable, empty, NaN, odd rate)."""


class TrainingError(DalError, RuntimeError):
  """A training run that cannot continue (e.g. diverged to NaN)."""
