"""vaelab's XLA settings: added to XLA_FLAGS once, never over the user's own choice, on every
jaxlib pyproject.toml allows that has the flag, and on no other."""
import importlib.metadata
import os
import tomllib

import jax
from packaging.requirements import Requirement

from conftest import ROOT
from vaelab import xla_flags


def test_the_setting_is_added_once_and_the_users_choice_is_kept(monkeypatch):
  monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (0, 10))
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_flags.apply(env)
  assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4",
                                      *xla_flags.SETTINGS]
  assert not xla_flags.apply(env)  # already there: unchanged
  assert env["XLA_FLAGS"].count(xla_flags.YNN_FLAG) == 1
  mine = {"XLA_FLAGS": f"--{xla_flags.YNN_FLAG}=-dot"}
  assert not xla_flags.apply(mine) and mine["XLA_FLAGS"] == f"--{xla_flags.YNN_FLAG}=-dot"
  empty = {}
  assert xla_flags.apply(empty) and empty["XLA_FLAGS"] == " ".join(xla_flags.SETTINGS)


def test_a_jaxlib_without_the_flag_gets_nothing(monkeypatch):
  # XLA aborts on an unknown flag in XLA_FLAGS.
  monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (0, 8))
  env = {}
  assert not xla_flags.apply(env) and "XLA_FLAGS" not in env


def _allowed_jax():
  """The jax requirement of pyproject.toml (jaxlib is released with jax, version for version)."""
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
  spec, = (Requirement(d).specifier for d in deps if Requirement(d).name == "jax")
  return spec


def _allowed_minors():
  spec = _allowed_jax()
  return [(0, minor) for minor in range(100) if spec.contains(f"0.{minor}.0")]


def test_every_allowed_jaxlib_gets_the_setting_exactly_where_it_has_the_flag(monkeypatch):
  allowed = _allowed_minors()
  assert allowed and set(xla_flags._VERSIONS) <= set(allowed)
  for version in allowed:
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda v=version: v)
    env = {}
    has_flag = version in xla_flags._VERSIONS
    assert xla_flags.apply(env) == has_flag, version
    assert env.get("XLA_FLAGS", "") == (" ".join(xla_flags.SETTINGS) if has_flag else ""), version


def test_this_process_runs_with_the_setting_where_its_jaxlib_has_it():
  # conftest imports vaelab before JAX starts a backend, as vaelab.main does.
  version = xla_flags._jaxlib_version()
  assert version is not None and _allowed_jax().contains(importlib.metadata.version("jaxlib"))
  flags = os.environ.get("XLA_FLAGS", "")
  if version in xla_flags._VERSIONS:
    assert xla_flags.YNN_FLAG in flags  # vaelab's setting, or the user's own value
  else:
    assert xla_flags.SETTINGS[0] not in flags
  # XLA aborts on a flag its jaxlib does not know: computing at all says the flags are valid.
  assert float(jax.numpy.arange(4.0).sum()) == 6.0
