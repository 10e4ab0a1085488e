"""vaelab's XLA settings: added to XLA_FLAGS once, never over the user's own choice."""
import os

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


def test_this_process_runs_with_the_setting():
  # conftest imports vaelab before JAX starts a backend, as vaelab.main does.
  if xla_flags._jaxlib_version() in xla_flags._VERSIONS:
    assert xla_flags.SETTINGS[0] in os.environ["XLA_FLAGS"]
