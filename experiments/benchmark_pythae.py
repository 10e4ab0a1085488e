"""pythae's trainer (and a plain PyTorch loop) on the VAE of experiments/benchmark_loop.py's
`pythae` row, for the side-by-side comparison; the goal: vaelab >= 1.5x pythae's trainer.

The model: 784-200-200-50, tanh, Bernoulli pixels (BCE), Adam 1e-3, batch 100, on the 5,000
MNIST images of mnist_5k.npz (random strokes of the same shape without it), one core
(torch.set_num_threads(1) and the process pinned to one CPU). pythae's trainer is timed over
`--epochs` epochs without evaluation data (its per-epoch bookkeeping included, as a user
runs it); the plain loop over the same number of steps. Run it with a Python that has
pythae and PyTorch (not vaelab's venv), then vaelab's side in vaelab's:

  python3 -m venv /tmp/pyt && /tmp/pyt/bin/pip install torch==2.13.0 pythae
  /tmp/pyt/bin/python experiments/benchmark_pythae.py [--epochs 20]
  .venv/bin/python experiments/benchmark_loop.py --one_core --models pythae --steps 1000

The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist_5k.npz")
HIDDEN, LATENT, BATCH = 200, 50, 100


def images() -> np.ndarray:
  if os.path.exists(MNIST):
    x = np.load(MNIST)["image"]
  else:
    x = (np.random.default_rng(0).random((5000, 28, 28, 1)) > 0.8).astype(np.uint8) * 255
  return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)


def mlp(sizes):
  layers = []
  for a, b in zip(sizes[:-1], sizes[1:]):
    layers += [nn.Linear(a, b), nn.Tanh()]
  return nn.Sequential(*layers[:-1])


def pythae_rate(x: np.ndarray, epochs: int) -> float:
  from pythae.models import VAE, VAEConfig
  from pythae.models.base.base_utils import ModelOutput
  from pythae.models.nn import BaseDecoder, BaseEncoder
  from pythae.pipelines import TrainingPipeline
  from pythae.trainers import BaseTrainerConfig

  class Encoder(BaseEncoder):
    def __init__(self):
      super().__init__()
      self.net = nn.Sequential(nn.Flatten(), mlp([784, HIDDEN, HIDDEN]), nn.Tanh())
      self.mean, self.logvar = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)

    def forward(self, x):
      h = self.net(x)
      return ModelOutput(embedding=self.mean(h), log_covariance=self.logvar(h))

  class Decoder(BaseDecoder):
    def __init__(self):
      super().__init__()
      self.net = nn.Sequential(mlp([LATENT, HIDDEN, HIDDEN, 784]), nn.Sigmoid())

    def forward(self, z):
      return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))

  config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
  model = VAE(config, encoder=Encoder(), decoder=Decoder())
  with tempfile.TemporaryDirectory() as out:
    trainer = BaseTrainerConfig(output_dir=out, num_epochs=epochs, learning_rate=1e-3,
                                per_device_train_batch_size=BATCH, no_cuda=True,
                                steps_saving=None, steps_predict=None)
    pipeline = TrainingPipeline(training_config=trainer, model=model)
    t = time.perf_counter()
    pipeline(train_data=x, eval_data=None)
    wall = time.perf_counter() - t
  return epochs * -(-len(x) // BATCH) / wall


def plain_rate(x: np.ndarray, steps: int) -> float:
  enc, dec = mlp([784, HIDDEN, HIDDEN, 2 * LATENT]), mlp([LATENT, HIDDEN, HIDDEN, 784])
  opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
  data, rng = torch.from_numpy(x.reshape(len(x), -1)), np.random.default_rng(0)

  def step():
    batch = data[torch.from_numpy(rng.integers(0, len(x), BATCH))]
    mean, logvar = enc(batch).chunk(2, -1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    nll = nn.functional.binary_cross_entropy_with_logits(dec(z), batch, reduction="none").sum(-1)
    kl = 0.5 * (torch.exp(logvar) + mean**2 - 1 - logvar).sum(-1)
    loss = (nll + kl).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()

  for _ in range(20):
    step()
  t = time.perf_counter()
  for _ in range(steps):
    step()
  return steps / (time.perf_counter() - t)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epochs", type=int, default=20)
  args = p.parse_args()
  x = images()
  trainer = pythae_rate(x, args.epochs)
  plain = plain_rate(x, args.epochs * -(-len(x) // BATCH))
  print(f"one core, VAE 784-{HIDDEN}-{HIDDEN}-{LATENT} tanh, batch {BATCH}: pythae trainer "
        f"{trainer:.1f} steps/s, plain PyTorch loop {plain:.1f} steps/s")
  print(json.dumps({"pythae_trainer_steps_per_sec": trainer, "torch_loop_steps_per_sec": plain,
                    "torch": torch.__version__, "epochs": args.epochs}))


if __name__ == "__main__":
  main()
