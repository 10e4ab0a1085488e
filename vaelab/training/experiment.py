"""What a config builds: the family, model, optimizers, data, mesh and compiled train step
(`build`), the pieces a run, a population member and a notebook share."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaelab import spmd, validation
from vaelab.data import make_sources, pipeline
from vaelab.data.base import described
from vaelab.errors import ConfigError
from vaelab.evaluate.evaluator import Evaluator
from vaelab.models.base import Family
from vaelab.training import optimizer as optimizer_lib
from vaelab.training import step as step_lib
from vaelab.training.state import TrainState


@dataclasses.dataclass
class Experiment:
  """Everything built from a config; the pieces a notebook needs to train in-process."""
  config: Any
  family: Family
  model: Any
  tx: Any
  mesh: Any
  train_source: Any
  eval_source: Any
  train_step: step_lib.TrainStep
  hparams: dict
  # The training source's device form when the step reads its batches on the device.
  train_form: Any = None
  # {group: optimizer} of the family's further parameter groups (`Family.groups`).
  group_txs: dict = dataclasses.field(default_factory=dict)
  # The train step with the device feed's gather compiled in front (`run_inputs`), under
  # "fused": one holder shared by every `for_member` copy, so that the runs made from this
  # experiment share its compilation (a copy's own attribute would compile once per member).
  compiled: dict = dataclasses.field(default_factory=dict)

  def init_state(self) -> TrainState:
    variables = init_variables(self.family, self.model, self.train_source, int(self.config.seed))
    return TrainState.create(variables, self.tx, int(self.config.seed), self.group_txs)

  def batcher(self) -> pipeline.Batcher:
    return pipeline.Batcher(self.train_source, int(self.config.batch_size), int(self.config.seed),
                            jax.process_index(), jax.process_count())

  def evaluator(self) -> Evaluator:
    return Evaluator(self.family, self.config, self.model, self.mesh, self.eval_source)

  def step_inputs(self, batchers: list, start: int, stacked: bool = False,
                  per_member: bool = False):
    """The train step's inputs for steps [start, num_train_steps): from one batcher (a run,
    or members sharing batches) or one per member, stacked on a member axis (a vmapped
    population) or as a tuple per step (`per_member`, members stepped in turn)."""
    steps = range(start, int(self.config.num_train_steps))
    if self.train_form is not None:
      feed = pipeline.DeviceFeed(batchers, self.train_form, self.mesh, stacked, per_member)
      return (feed.batch(s) for s in steps)
    shard = lambda b, **kw: spmd.shard_batch(self.mesh, b, **kw)
    if stacked:
      batches = (shard({k: np.stack([b[k] for b in member]) for k in member[0]}, stacked=True)
                 for s in steps for member in [[b.batch(s) for b in batchers]])
    elif per_member:
      batches = (tuple(shard(b.batch(s)) for b in batchers) for s in steps)
    else:
      batches = (shard(batchers[0].batch(s)) for s in steps)
    return pipeline.prefetch(batches)

  def run_inputs(self, start: int, batchers: list | None = None, vmapped: bool = False):
    """(train step, its inputs for steps [start, num_train_steps)) of a run alone, or of a
    population (`batchers`: one, shared by its members, or one per member; `vmapped`: its
    step batches them): on the device path the gather compiled into the step, which then
    takes the gather's arguments (where the device form allows it, `DeviceForm.fuse`, and
    not for a vmapped population); otherwise `train_step` and the batches of
    `step_inputs`."""
    batchers = [self.batcher()] if batchers is None else batchers
    per_member = len(batchers) > 1
    if self.train_form is None or not self.train_form.fuse or vmapped:
      return self.train_step, self.step_inputs(batchers, start, stacked=vmapped and per_member,
                                               per_member=per_member)
    feed = pipeline.DeviceFeed(batchers, self.train_form, self.mesh, per_member=per_member)
    steps = range(start, int(self.config.num_train_steps))
    if "fused" not in self.compiled:
      self.compiled["fused"] = self.train_step.with_input(feed.gather)
    return self.compiled["fused"], (feed.args(s) for s in steps)

  def for_member(self, config) -> "Experiment":
    """This experiment for `config`, which differs from its own only in population keys
    (the seed, the learning rates, the family's step arrays; population.groups): the
    model, data and compiled steps are shared, the optimizers' states and the
    hyperparameters are the config's."""
    tx, group_txs = optimizers(self.family, config)
    return dataclasses.replace(self, config=config, tx=tx, group_txs=group_txs,
                               hparams=hparams_of(self.family, config, self.mesh))


def init_variables(family: Family, model, train_source, seed: int) -> dict:
  if family.init_input is not None:
    x = family.init_input(model, train_source)
  else:
    x = jnp.zeros((1, *train_source.info.image_shape), jnp.float32)
  keys = spmd.example_keys(seed, 0, jnp.zeros((1,), jnp.int32))
  return spmd.init(model, jax.random.key(seed), x, keys)


def hparams_of(family: Family, config, mesh) -> dict:
  return spmd.replicate(mesh, {k: jnp.asarray(v, jnp.float32)
                               for k, v in family.hparams(config).items()})


def build(config, sources=None, population: str | None = None,
          population_impl: str = "vmap") -> Experiment:
  """Validates the config and builds model, optimizer, data and the compiled-on-first-use step
  (`population`: the step of a population of such runs, see train/population.py)."""
  family = validation.validate(config)
  train_source, eval_source = sources or make_sources(config.data)
  _check_data(config, train_source, eval_source)
  if family.transform_sources is not None:
    train_source, eval_source = family.transform_sources(config, train_source, eval_source)
  info = described(train_source)
  model = family.make_model(config, info)
  tx, group_txs = optimizers(family, config)
  mesh = spmd.make_mesh()
  batch_size = int(config.batch_size)
  form = pipeline.device_form(train_source, config.data.placement, batch_size,
                              reads=batch_size * int(config.num_train_steps))
  train_step = step_lib.make_train_step(family.make_loss(config, info), model, tx, mesh,
                                        config.data.binarize, config.nonfinite == "skip",
                                        population, population_impl, group_txs)
  return Experiment(config, family, model, tx, mesh, train_source, eval_source, train_step,
                    hparams_of(family, config, mesh), form, group_txs)


def optimizers(family: Family, config):
  """(the model's optimizer, {group: its optimizer}) from `optimizer.*` and each further
  parameter group's own section `<group>_optimizer.*`."""
  steps = int(config.num_train_steps)
  return (optimizer_lib.make_optimizer(config.optimizer, steps),
          {g: optimizer_lib.make_optimizer(config[f"{g}_optimizer"], steps)
           for g in family.groups})


def _check_data(config, train_source, eval_source):
  if train_source.info.image_shape != eval_source.info.image_shape:
    raise ConfigError(f"data: train images are {train_source.info.image_shape} but eval images "
                      f"are {eval_source.info.image_shape}")
  if config.model.get("encoder") in ("conv", "dlib_conv"):
    h, w, _ = train_source.info.image_shape
    f = 2**len(config.model.conv_channels)
    if h % f or w % f:
      raise ConfigError(f"model.conv_channels has {len(config.model.conv_channels)} stride-2 "
                        f"layers, so image height and width must be multiples of {f}; the data "
                        f"({config.data.name}) has {h}x{w}")

