"""Hyperparameter sweeps: trials defined by a config file's `get_sweep(h)`, each a normal,
resumable run in `<workdir>/<trial name>/`, trained as populations where they can be.

A config file may define

  def get_sweep(h):
    return h.product(h.sweep("loss.beta", [1.0, 2.0, 4.0, 8.0]), h.sweep("seed", [0, 1]))

`h.sweep(key, values)` is a list of one-key override dicts, `h.product(...)` their
cartesian product, `h.zip(...)` their element-wise union (equal lengths), `h.fixed(key,
value)` a single setting (the XManager / big_vision convention). The command line's
`--sweep=KEY=V1,V2,...` (repeatable: the product of all of them) takes the place of
get_sweep. Every definition is checked before anything runs: an unknown key, an empty value
list or a zip of unequal lengths is refused naming it.
"""
from __future__ import annotations

import ast
import csv
import importlib.util
import itertools
import os
import re

import jax
from absl import logging

from vaelab import config_base
from vaelab.errors import ConfigError


# How trials that can share a step train: as populations of the backend's default
# implementation (auto: loop on CPUs, vmap on accelerators), of a given one (vmap: batched,
# equal to the runs alone up to float rounding; loop: members in turn, bitwise equal), or
# every trial alone (off). See train/step.py, POPULATION_IMPLS.
POPULATION_MODES = ("auto", "vmap", "loop", "off")


class Hyper:
  """The `h` handed to `get_sweep(h)`."""

  def sweep(self, key: str, values) -> list[dict]:
    if not isinstance(key, str) or not key:
      raise ConfigError(f"h.sweep: the key must be a dotted config key, got {key!r}")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
      raise ConfigError(f"h.sweep({key!r}, {values!r}): values must be a list")
    values = list(values)
    if not values:
      raise ConfigError(f"h.sweep({key!r}, []): the value list is empty")
    return [{key: v} for v in values]

  def fixed(self, key: str, value) -> list[dict]:
    return self.sweep(key, [value])

  def product(self, *sweeps) -> list[dict]:
    _check_parts("h.product", sweeps)
    return [_merge("h.product", parts) for parts in itertools.product(*sweeps)]

  def zip(self, *sweeps) -> list[dict]:
    _check_parts("h.zip", sweeps)
    lengths = [len(s) for s in sweeps]
    if len(set(lengths)) > 1:
      described = ", ".join(f"{n} ({'/'.join(sorted(s[0]))})" for n, s in zip(lengths, sweeps))
      raise ConfigError(f"h.zip: the lists have unequal lengths {described}")
    return [_merge("h.zip", parts) for parts in zip(*sweeps)]


def _check_parts(name: str, sweeps):
  if not sweeps:
    raise ConfigError(f"{name}() needs at least one list of settings")
  for s in sweeps:
    if not isinstance(s, list) or not s or not all(isinstance(d, dict) for d in s):
      raise ConfigError(f"{name}: each argument must be a non-empty list of override dicts "
                        f"(from h.sweep), got {s!r}")


def _merge(name: str, parts) -> dict:
  out = {}
  for d in parts:
    clash = set(out) & set(d)
    if clash:
      raise ConfigError(f"{name}: the key {sorted(clash)[0]!r} is set twice in one trial")
    out.update(d)
  return out


def load_sweep(config_file: str) -> list[dict]:
  """The override dicts of `configs/NAME.py[:variant]`'s get_sweep(h)."""
  path = config_file.split(":", 1)[0]
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ConfigError(f"{path} defines no get_sweep(h): nothing to sweep")
  trials = module.get_sweep(Hyper())
  if not isinstance(trials, list) or not trials:
    raise ConfigError(f"{path}: get_sweep(h) must return a non-empty list of override dicts")
  return trials


def _split_top_level(text: str) -> list[str]:
  """`1,(2,3),4` -> ['1', '(2,3)', '4']: commas inside brackets belong to a value."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += ch in "([{"
    depth -= ch in ")]}"
    if ch == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [p.strip() for p in parts]


def _typed(key: str, text: str, current):
  """A command-line value as the type of the config's `current` value."""
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f"--sweep {key}: {text!r} is not a value of the key's type "
                      f"{type(current).__name__}") from e
  if isinstance(current, bool) or not isinstance(current, (int, float)):
    return value
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def sweep_from_flags(specs, base) -> list[dict]:
  """The trials of `--sweep=KEY=V1,V2,...` flags: the product of every flag's values, each
  typed as the config's own value of KEY (a tuple value keeps its commas in brackets)."""
  flat = config_base.flat(base)
  h = Hyper()
  parts = []
  for spec in specs:
    key, eq, values = spec.partition("=")
    key = key.strip()
    if not eq or not key or not values.strip():
      raise ConfigError(f"--sweep={spec!r}: expected KEY=V1,V2,... (e.g. "
                        f"--sweep=loss.beta=1,4,16)")
    if key not in flat:
      raise ConfigError(f"--sweep={spec!r}: {key!r} is not a key of the config")
    parts.append(h.sweep(key, [_typed(key, v, flat[key]) for v in _split_top_level(values)]))
  return h.product(*parts)


def trial_name(overrides: dict) -> str:
  """`loss.beta=4.0,seed=1`: readable, and a valid directory name."""
  text = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text) or "default"


def trial_configs(base, trials: list[dict]) -> list[tuple[str, dict, object]]:
  """(name, overrides, config) of every trial; refuses unknown keys and repeated trials."""
  out, seen = [], set()
  for overrides in trials:
    config = base.copy_and_resolve_references()
    config.lock()
    for key, value in overrides.items():
      try:
        config_base.set_overrides(config, {key: value})
      except (KeyError, AttributeError) as e:
        raise ConfigError(f"sweep key {key!r} is not a key of the config") from e
      except TypeError as e:
        raise ConfigError(f"sweep key {key!r}: value {value!r} does not fit ({e})") from e
    name = trial_name(overrides)
    if name in seen:
      raise ConfigError(f"the sweep has the trial {name!r} twice")
    seen.add(name)
    out.append((name, overrides, config))
  return out


def latest_step(workdir: str) -> int:
  d = os.path.join(workdir, "checkpoints")
  steps = [int(s) for s in os.listdir(d) if s.isdigit()] if os.path.isdir(d) else []
  return max(steps, default=0)


def finished(config, workdir: str) -> bool:
  return (os.path.exists(os.path.join(workdir, "results.json"))
          and latest_step(workdir) >= int(config.num_train_steps))


def run_sweep(base, config_file: str, workdir: str, population: str = "auto",
              sweep_flags=()) -> list[dict]:
  """Runs (or resumes) every trial (the config file's get_sweep, or the `--sweep` flags'
  product where any are given), then writes sweep.csv and the plots; returns the rows."""
  from vaelab import validation
  from vaelab.training import loop
  from vaelab.training import population as population_lib
  if population not in POPULATION_MODES:
    raise ConfigError(f"--population={population!r}: expected one of {POPULATION_MODES}")
  trials = trial_configs(base, sweep_from_flags(sweep_flags, base) if sweep_flags
                         else load_sweep(config_file))
  for name, _, config in trials:
    try:
      validation.validate(config)
    except ConfigError as e:
      raise ConfigError(f"trial {name}: {e}") from e
  todo = [(n, o, c) for n, o, c in trials if not finished(c, os.path.join(workdir, n))]
  logging.info("Sweep of %d trials in %s: %d to run", len(trials), workdir, len(todo))
  if population == "off":
    batches = [[t] for t in todo]
  else:
    batches = []
    for group in population_lib.groups([c for _, _, c in todo]):
      by_step: dict[int, list] = {}
      for i in group:
        by_step.setdefault(latest_step(os.path.join(workdir, todo[i][0])), []).append(todo[i])
      batches += list(by_step.values())
  for batch in batches:
    dirs = [os.path.join(workdir, n) for n, _, _ in batch]
    if len(batch) == 1:
      logging.info("Trial %s", batch[0][0])
      loop.train_and_evaluate(batch[0][2], dirs[0])
    else:
      logging.info("Population of %d: %s", len(batch), ", ".join(n for n, _, _ in batch))
      population_lib.train_population([c for _, _, c in batch], dirs,
                                      None if population == "auto" else population)
  if jax.process_index() != 0:  # process 0 writes the results that the table reads
    return []
  rows = collect(workdir, trials)
  write_csv(os.path.join(workdir, "sweep.csv"), rows, sorted({k for _, o, _ in trials
                                                               for k in o}))
  from vaelab.evaluate import sweep_pictures
  sweep_pictures.plot_metrics(rows, workdir)
  return rows


def collect(workdir: str, trials) -> list[dict]:
  import json
  rows = []
  for name, overrides, _ in trials:
    with open(os.path.join(workdir, name, "results.json")) as f:
      results = json.load(f)
    rows.append({"trial": name, **overrides, **results})
  return rows


def write_csv(path: str, rows: list[dict], keys: list[str]) -> str:
  metrics = sorted({k for r in rows for k in r if k.startswith("eval/")})
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, ["trial", *keys, *metrics], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, path)
  return path
