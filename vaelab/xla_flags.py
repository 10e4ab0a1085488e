"""XLA settings vaelab applies before JAX starts a backend (imported by `vaelab/__init__`).

XLA:CPU in jaxlib 0.10-0.11 hands reductions to YNNPACK fusions, and a fused
reduce-to-scalar there is slow: in a per-thunk profile (`--xla_cpu_enable_xprof_traceme=true`)
the small AE's `recon_sse` (sigmoid, subtract, square, sum over 32x28x28) took much of its
train step, many times what XLA's own loop fusion takes, and the cross-entropy's sum another
large share. The known workaround (jax-ml/jax#37465) takes reductions out of YNNPACK; matmuls
stay there. Both the small and the large AE's steps got faster with it
(experiments/benchmark_loop.py measures them).

The setting is added to XLA_FLAGS only when the user's XLA_FLAGS does not name the flag
already (`--xla_cpu_experimental_ynn_fusion_type=-dot` keeps XLA's default) and only for
jaxlib versions that have the flag (XLA refuses unknown flags). XLA reads XLA_FLAGS when JAX
creates its first backend: in a process that has already computed with JAX before importing
vaelab, the setting waits for the next process.
"""
from __future__ import annotations

import importlib.metadata
import os

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
SETTINGS = (f"--{YNN_FLAG}=-reduce",)
# jaxlib versions known to have the flag.
_VERSIONS = ((0, 10), (0, 11))


def _jaxlib_version() -> tuple[int, int] | None:
  try:
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return None


def apply(environ=os.environ) -> bool:
  """Adds SETTINGS to environ["XLA_FLAGS"]; False where it leaves them alone."""
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FLAG in flags or _jaxlib_version() not in _VERSIONS:
    return False
  environ["XLA_FLAGS"] = " ".join([flags, *SETTINGS]).strip()
  return True
