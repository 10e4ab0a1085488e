"""Layers that only point down: the ground floor (spmd, errors, config_base, checkpoint,
checks) imports no other vaelab module (checks: errors only), data and evaluate never import
models or train, models never import train. Read from the sources (imports inside functions included), so a new
upward import fails here rather than in a circular-import error later."""
from __future__ import annotations

import ast
import os

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "vaelab")
# What each layer may not import (by module prefix).
FORBIDDEN = {
    "vaelab/spmd.py": ("vaelab.",),
    "vaelab/errors.py": ("vaelab.",),
    # Every family's validate calls it.
    "vaelab/checks.py": ("vaelab.spmd", "vaelab.checkpoint", "vaelab.config_base",
                         "vaelab.validation", "vaelab.data", "vaelab.models", "vaelab.losses",
                         "vaelab.evaluate", "vaelab.training", "vaelab.api", "vaelab.files"),
    "vaelab/checkpoint.py": ("vaelab.data", "vaelab.models", "vaelab.evaluate", "vaelab.training",
                             "vaelab.losses", "vaelab.api"),
    "vaelab/data/": ("vaelab.models", "vaelab.training", "vaelab.api", "vaelab.evaluate"),
    "vaelab/evaluate/": ("vaelab.models", "vaelab.training", "vaelab.api"),
    "vaelab/losses/": ("vaelab.models", "vaelab.training", "vaelab.api", "vaelab.evaluate"),
    "vaelab/models/": ("vaelab.training", "vaelab.api"),
}


def _imports(path: str) -> list[str]:
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
  return out


def _files():
  for dirpath, _, names in os.walk(PACKAGE):
    for n in names:
      if n.endswith(".py"):
        yield os.path.relpath(os.path.join(dirpath, n), ROOT)


@pytest.mark.parametrize("path", sorted(_files()))
def test_imports_only_point_down(path):
  rules = [bad for prefix, bad in FORBIDDEN.items() if path.startswith(prefix)]
  for module in _imports(os.path.join(ROOT, path)):
    for bad in (b for r in rules for b in r):
      assert not (module + ".").startswith(bad), f"{path} imports {module}"
