"""Runs a tiny VAE training in its own process (so XLA_FLAGS can set the device count).

  python tests/tiny_run.py WORKDIR TRAIN.npz EVAL.npz NUM_STEPS
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from conftest import tiny_config  # noqa: E402
from vaelab.training import loop  # noqa: E402

if __name__ == "__main__":
  workdir, train, evalp, steps = sys.argv[1:5]
  config = tiny_config("vae", train, evalp, num_train_steps=int(steps), **{
      "data.binarize": "dynamic"})
  results = loop.train_and_evaluate(config, workdir)
  print(json.dumps({"devices": jax.device_count(), **results}))
