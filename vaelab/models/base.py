"""What a family provides to the shared train step, evaluator and loop.

A family is a Flax module plus its objective. The step, the loop and the
evaluator call only these functions, so adding a family means adding one file
in `vaelab/models/` that defines `FAMILY`, and its objective in `vaelab/losses/`.

Conventions shared by all functions below:
  variables: {"params": ..., <other collections>: ...}
  batch:     dict of ONE DEVICE'S SHARD of the global batch; "image" float (B, H, W, C) in
             [0, 1]. A loss runs per device: a statistic of the whole batch inside an
             objective must be reduced with vaelab.spmd.global_mean / global_sum /
             global_gather, or the run changes with the device count
  keys:      per-example PRNG keys, shape (B,), derived from (seed, step, example index)
             so that a run does not depend on how the batch is split over devices
  hparams:   dict of scalar arrays (beta, ...) that enter the step as arguments; in the
             train step it also holds "step", for schedules inside an objective
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from vaelab import spmd

Metrics = dict[str, Any]


# The jitted model application shared by every layer lives on the ground floor.
apply, init = spmd.apply, spmd.init


def method(name: str) -> Callable[..., Any]:
  """(model, variables, *args) -> the model's method `name` applied (jitted, spmd.apply)."""
  return lambda model, variables, *args: spmd.apply(model, variables, *args, method=name)


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  # (config, SourceInfo) -> nn.Module whose __call__(x, keys) is used for init. The info is
  # the training split's, with its size (`num_examples`).
  make_model: Callable[..., Any]
  # Every model also has a method `reconstruct(x)` -> images in [0, 1], used for pictures.
  # (config, SourceInfo of the training split, with its size) -> loss_fn(model, params,
  #   model_state, batch, keys, hparams) -> (loss, (metrics, new_model_state)).
  # Runs: every train step. Metrics are per-device means; the step averages them over
  # devices. A factory, so that string options (likelihood, penalty path) are fixed before
  # tracing.
  make_loss: Callable[[Any], Callable[..., Any]]
  # config -> fn(model, variables, batch, keys, hparams) -> {name: per-example array (B,)};
  # averaged over the evaluation set and written as eval/<name>.
  # Runs: every evaluation, periodic and final (and --mode=eval).
  make_eval_metrics: Callable[[Any], Callable[..., Metrics]]
  # config -> (stats_fn, reduce_fn), or None: metrics of the whole evaluation set that are not
  # means of per-example values (a codebook's perplexity over the set, an MMD). stats_fn(model,
  # variables, batch, keys, hparams, mask) -> {name: array} of sums over the masked examples
  # of one batch (one device's shard); they are added over devices and batches, and
  # reduce_fn({name: host array}) -> {name: float} turns the totals into eval/<name>.
  # Runs: every evaluation, periodic and final, in the same pass as make_eval_metrics.
  make_eval_set_stats: Optional[Callable[[Any], tuple]] = None
  # Like make_eval_metrics, for metrics too costly for every periodic evaluation (exact
  # Jacobian norms, importance-weighted bounds).
  # Runs: the final evaluation only (the end of a run, and --mode=eval).
  make_final_eval_metrics: Optional[Callable[[Any], Callable[..., Metrics]]] = None
  # (config, model, variables, train_source, eval_source) -> {eval/<name>: float}: statistics
  # of the trained model that are not means of per-example values (active units, codebook
  # usage over the set, ...); the sources give model inputs (binarized as in training).
  # Runs: the final evaluation only, after the final eval metrics.
  final_analyses: Optional[Callable[..., dict[str, float]]] = None
  # config -> {name: float}: numeric hyperparameters passed to the step as arrays.
  # Runs: when a run's experiment is built (its values enter every step and evaluation).
  hparams: Callable[[Any], dict[str, float]] = lambda config: {}
  # config -> None, raising ConfigError that names the key. Runs: before anything is built.
  validate: Callable[[Any], None] = lambda config: None
  # (model, variables, key, n, config=config) -> n images from the model's prior, or None.
  # Runs: for the final evaluation's samples.png, --mode=sample and `Run.sample`.
  sample: Optional[Callable[..., Any]] = None
  # (config, train_source, eval_source) -> {eval/<name>: float}: what the model is compared
  # with, computed from the data alone (a PCA of the same size, a last-frame predictor).
  # Runs: the final evaluation only, after final_analyses.
  final_baselines: Optional[Callable[..., dict[str, float]]] = None
  # (model, variables, x) -> codes (B, ...) of model inputs x for downstream use: the linear
  # probe on labels (eval/probe_error beside eval/probe_error_pixels) and the disentanglement
  # scores; None: the family has no such representation. `method(name)` makes it from a
  # model method. Runs: the final evaluation (probe, disentanglement scores), periodic
  # evaluations that score the representation (eval.disentanglement_every), `Run.encode`
  # where `encode` is None.
  features: Optional[Callable[..., Any]] = None
  # The one decode-to-image convention (`vaelab.Run.encode` / `decode`, latent pictures):
  # encode: (model, variables, x) -> codes of model inputs x; None: `features`.
  # decode: (model, variables, codes) -> images in [0, 1] (the decoder's mean image), where
  # codes are what `encode` returns; None: the family has no decoder from codes.
  # `method(name)` makes either from a model method. Runs: `Run.encode` / `Run.decode`.
  encode: Optional[Callable[..., Any]] = None
  decode: Optional[Callable[..., Any]] = None
  # (config, model, variables, workdir, eval_source) -> [paths]: the family's own pictures
  # (learned filters, latent traversals), written beside the reconstruction grid.
  # Runs: the final evaluation only, with a workdir, on process 0.
  pictures: Optional[Callable[..., list]] = None
  # (config, train_source, eval_source) -> (train_source, eval_source): what the family
  # trains on when it is not the images themselves (a prior over a frozen VQ model's
  # codes). Runs: when a run's experiment is built, after the data config's sources and
  # before the model.
  transform_sources: Optional[Callable[..., tuple]] = None
  # (model, train_source) -> the first argument of `model.init`; None: a zero image of the
  # source's `info.image_shape` with a batch axis of 1. Runs: when the parameters are made.
  init_input: Optional[Callable[..., Any]] = None
  # Whether make_model honours `config.dtype` (activations in bfloat16/float16, parameters
  # and objective in float32); a family that does not is refused any dtype but float32.
  mixed_precision: bool = False
  # Further trainable parameter groups beside the model's own (FactorVAE's discriminator):
  # the names of top-level entries of the model's params (submodules of that name). Each is
  # trained by its own optimizer, built from its own config section `<name>_optimizer.*`
  # (every key `optimizer.*` has; config_base.optimizer_section), on its own loss: with
  # groups, the loss returns {"model": loss, <name>: loss, ...} instead of one loss, and
  # each part of the parameters takes the gradient of its own entry only (the model's
  # loss does not train the discriminator, nor the discriminator's the encoder). Logged as
  # train/<name>_loss, train/<name>_grad_norm, train/<name>_learning_rate; checkpoints,
  # resume (each group's learning rate reset from its section), populations (each
  # group's learning rate may vary) and the run contract cover every group.
  groups: tuple = ()
  # The string-valued config keys that change what the train step computes, each with all
  # its allowed values ({"loss.objective": ("elbo", "capacity", "iwae")}): the contract tests
  # (tests/test_contract.py) run every value through the device, population and resume
  # invariances, so a new option is covered without new tests.
  options: dict = dataclasses.field(default_factory=dict)
