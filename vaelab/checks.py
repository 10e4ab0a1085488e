"""Checks of single config values, one behaviour wherever a key is validated.

On the ground floor (it imports only vaelab.errors), so that vaelab.validation and every
family's `validate` in vaelab/models call the same function.
"""
from __future__ import annotations

import math
import numbers

from vaelab.errors import ConfigError


def is_integer(value) -> bool:
  """An int (numpy's too) or a finite float with an integral value (2.0, as a command line
  or JSON may write it); never a bool, a string, inf, nan or 2.5."""
  if isinstance(value, bool):
    return False
  if isinstance(value, numbers.Integral):
    return True
  return isinstance(value, numbers.Real) and math.isfinite(value) and \
      float(value).is_integer()


def integer(value, key: str, minimum: int | None = None, maximum: int | None = None,
            bounds: str | None = None) -> int:
  """`value` as an int; ConfigError naming `key` unless it is an integer (`is_integer`) in
  [minimum, maximum] (None: unbounded on that side). `bounds` words the range in the
  message where its ends come from other keys ("[model.k=3, model.latent_dim=16]")."""
  ok = is_integer(value) and (minimum is None or value >= minimum) and \
      (maximum is None or value <= maximum)
  if not ok:
    if bounds is not None:
      expected = f"an integer in {bounds}"
    elif minimum is not None and maximum is not None:
      expected = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
      expected = f"an integer >= {minimum}"
    elif maximum is not None:
      expected = f"an integer <= {maximum}"
    else:
      expected = "an integer"
    raise ConfigError(f"{key}={value!r}: must be {expected}")
  return int(value)
