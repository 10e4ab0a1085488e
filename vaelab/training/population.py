"""Populations: runs that differ only in numbers the step takes as arrays, trained together.

Members may differ in the seed, optimizer.learning_rate (the peak rate is an array in the
optimizer state, see optimizer.py), each further parameter group's
<group>_optimizer.learning_rate, and any key that reaches the step only through its
family's `hparams` (beta, C_max, gamma, lambda, rho, the sparsity weight, the commitment
weight, ...). Two implementations (train/step.py, POPULATION_IMPLS): "vmap" stacks their
states, hyperparameters and metrics on a leading member axis and vmaps the per-device step
over it inside the one sharded train step (one compilation, bigger operations: what
accelerators need); "loop" applies the one-run step to each member in turn (one
compilation, bitwise the runs alone, and on a CPU, whose cores one run already keeps busy,
the faster). `default_impl()` picks by backend. Members sharing a seed read one batch;
otherwise each reads its own, so every member sees exactly the data and randomness it
would see alone.

Grouping is sound by construction. A population is built from its first member's config,
so two configs may share one only if everything that is not a step argument is identical:
configs are first grouped by their keys (all equal but population keys), then each group is
split by what the configs actually build: the model (Flax modules compare by their fields)
and the traced programs of the objective and of the evaluation metrics, with the
hyperparameters as arguments. A key that also feeds something static (TD-VAE's jump
lengths set its model's dt features) changes the model or a program, and its configs train
apart.

Each member keeps its own workdir, checkpoints, metrics.jsonl, pictures and results.json,
resumable alone or in a population.
"""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from vaelab import config_base, models, spmd, validation
from vaelab.data import make_sources
from vaelab.data.base import described
from vaelab.training import loop
from vaelab.training import experiment as experiment_lib
from vaelab.training import pending_metrics
from vaelab.training import workdir as workdir_lib
from vaelab.training.metrics_writer import MetricsWriter

# Keys a population may vary besides the family's hyperparameters.
ALWAYS = ("seed", "optimizer.learning_rate")


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _with(config, overrides: dict):
  return config_base.set_overrides(config.copy_and_resolve_references(), overrides)


def is_population_key(config, key: str) -> bool:
  """Whether `key` may reach the step as an array: the seed, the learning rate, or a number
  that changes the family's `hparams` when it changes. (Whether it reaches anything
  static as well is what `groups` checks on the programs.)"""
  if key in ALWAYS:
    return True
  family = models.get_family(config.model.name)
  if key in {f"{g}_optimizer.learning_rate" for g in family.groups}:
    return True
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  hparams = family.hparams
  return hparams(_with(config, {key: value * 2 + 1})) != hparams(config)


def _structure(flat: dict, keys) -> str:
  """The config's keys but the population keys: equal for members of one population."""
  return json.dumps({k: v for k, v in flat.items() if k not in keys}, sort_keys=True,
                    default=str)


def groups(configs: list) -> list[list[int]]:
  """Indices of `configs` grouped into populations (a group of one trains alone): configs
  that are equal once the keys that differ between them, all population keys, are set
  aside, and that build the same model and the same objective and evaluation programs."""
  flat = [config_base.flat(c.to_dict()) for c in configs]
  differing = sorted({k for f in flat for k in f if any(g.get(k) != f.get(k) for g in flat)})
  keys = [k for k in differing if all(_has(c, k) and is_population_key(c, k) for c in configs)]
  by_keys: dict[str, list[int]] = {}
  for i, f in enumerate(flat):
    by_keys.setdefault(_structure(f, keys), []).append(i)
  out = []
  for group in by_keys.values():
    out.extend(_split_by_program(configs, group) if len(group) > 1 else [group])
  return out


def _split_by_program(configs: list, group: list[int]) -> list[list[int]]:
  """`group` split by the signature of what each config builds (module docstring)."""
  keys = {i: configs[i].to_json_best_effort(sort_keys=True) for i in group}
  missing = [i for i in group if keys[i] not in _SIGNATURES]
  if missing:
    # The group's configs share every data key, so one set of sources serves them all; a
    # config's keys (data included) fix its signature, which is kept for later calls.
    first = configs[group[0]]
    family = validation.validate(first)
    sources = make_sources(first.data)
    if family.transform_sources is not None:
      sources = family.transform_sources(first, *sources)
    for i in missing:
      _SIGNATURES[keys[i]] = program_signature(configs[i], sources)
  out: dict[str, list[int]] = {}
  for i in group:
    out.setdefault(_SIGNATURES[keys[i]], []).append(i)
  return list(out.values())


_SIGNATURES: dict[str, str] = {}


def program_signature(config, sources) -> str:
  """What a population shares with this config's run alone, as text: the model and the
  jaxprs of the family's objective and evaluation metrics (hyperparameters as arguments,
  constants included)."""
  family = models.get_family(config.model.name)
  train_source, _ = sources
  info = described(train_source)
  model = family.make_model(config, info)
  variables = jax.eval_shape(lambda: experiment_lib.init_variables(family, model, train_source,
                                                         int(config.seed)))
  batch = train_source.get(np.arange(2))
  batch = {**batch, "index": np.arange(2, dtype=np.int32), "mask": np.ones(2, np.float32)}
  batch = spmd.model_input(batch, config.data.binarize, spmd.example_keys(0, 0, jnp.arange(2)))
  keys = spmd.example_keys(0, 0, jnp.arange(2))
  hparams = {k: jnp.float32(v) for k, v in family.hparams(config).items()}
  params, model_state = variables["params"], {k: v for k, v in variables.items()
                                              if k != "params"}
  loss = family.make_loss(config, info)
  # The loss runs inside the step's shard_map, where its collectives have the batch axis.
  programs = [jax.make_jaxpr(lambda p, s, b, h: loss(model, p, s, b, keys, h),
                             axis_env=[(spmd.AXIS, 1)])(
      params, model_state, batch, {**hparams, "step": jnp.int32(0)})]
  for make in (family.make_eval_metrics, family.make_final_eval_metrics):
    if make is not None:
      fn = make(config)
      programs.append(jax.make_jaxpr(lambda v, b, h: fn(model, v, b, keys, h))(
          variables, batch, hparams))
  consts = [_const_bytes(c) for p in programs for c in p.consts]
  return json.dumps([repr(model), [str(p.jaxpr) for p in programs], consts])


def _const_bytes(c) -> str:
  if jax.dtypes.issubdtype(getattr(c, "dtype", None), jax.dtypes.prng_key):
    c = jax.random.key_data(c)
  return np.asarray(c).tobytes().hex()


def _has(config, key: str) -> bool:
  try:
    _get(config, key)
    return True
  except (KeyError, AttributeError):
    return False


def _stack(trees):
  # On the host (the members' states are host arrays until placed): stacking on the device
  # would compile a stack per leaf shape.
  return jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(trees))


def default_impl() -> str:
  """"loop" on CPUs (measured faster there, see step.POPULATION_IMPLS), else "vmap"."""
  return "loop" if jax.default_backend() == "cpu" else "vmap"


def train_population(configs: list, workdirs: list[str], impl: str | None = None,
                     evaluate: bool = True) -> list[dict | None]:
  """Trains the runs `configs` (each into its workdir) as one population; returns each
  one's results. All must belong to one group of `groups` and resume from the same step
  (checkpoints of different steps: train those groups separately). `impl`: one of
  step.POPULATION_IMPLS, "vmap" (batched) or "loop" (members in turn: bitwise the runs
  alone); None: `default_impl()`. `evaluate=False` leaves out the final evaluation."""
  impl = impl or default_impl()
  if len(configs) != len(workdirs) or not configs:
    raise ValueError("train_population needs one workdir per config, and at least one")
  for c in configs:
    validation.validate(c)
  if len(groups(configs)) != 1:
    raise ValueError("these configs differ in more than population keys "
                     f"({ALWAYS} and the family's hyperparameters), or build different "
                     f"models or programs; see population.groups")
  seeds = [int(c.seed) for c in configs]
  shared = len(set(seeds)) == 1
  lead = experiment_lib.build(configs[0], population="shared" if shared else "stacked",
                    population_impl=impl)
  runs, states, starts = [], [], []
  evaluator = lead.evaluator()
  for i, (config, workdir) in enumerate(zip(configs, workdirs)):
    exp = lead.for_member(config)
    ckpt, state, start = workdir_lib.open_run(exp, workdir)
    run = loop.RunRecord(exp, workdir, ckpt, MetricsWriter(workdir, start),
                      pending_metrics.PendingMetrics(config.nonfinite, i, f"{workdir}: "),
                      evaluator.for_config(config), i)
    run.buffer.skipped = int(jax.device_get(state.skipped_steps))
    runs.append(run)
    states.append(state)
    starts.append(start)
  if len(set(starts)) != 1:
    for r in runs:
      r.ckpt.close()
    raise ValueError(f"the members resume from different steps {dict(zip(workdirs, starts))}; "
                     f"train them in groups of equal steps")
  vmapped = impl == "vmap"
  hparams = [r.exp.hparams for r in runs]
  lead = dataclasses.replace(lead, hparams=spmd.replicate(lead.mesh, _stack(hparams)) if vmapped
                             else tuple(hparams))
  state = (spmd.replicate(lead.mesh, _stack(states)) if vmapped else
           tuple(spmd.replicate(lead.mesh, s) for s in states))
  batchers = [lead.batcher()] if shared else [r.exp.batcher() for r in runs]
  train_step, inputs = lead.run_inputs(starts[0], batchers, vmapped)
  return loop.run_steps(lead, runs, state, inputs, starts[0], evaluate, train_step=train_step)[1]
