"""What the reproduction scripts in experiments/ share: configs with overrides, runs in
workdirs, restored models, an aligned table and the final JSON line.

The scripts run `vaelab.training.loop.train_and_evaluate`, the same code as
`python -m vaelab.main --config=configs/NAME.py --workdir=DIR --config.key=value ...`, so each
run's workdir holds what that command writes (results.json, metrics.jsonl, checkpoints,
pictures). A workdir is named after its overrides and step count: running a script again
resumes each run from its checkpoint (a finished run is only evaluated again).
"""
from __future__ import annotations

import argparse
import json
import logging as py_logging
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def parser(description: str, name: str, seeds: str = "0") -> argparse.ArgumentParser:
  """The arguments every reproduction script takes."""
  p = argparse.ArgumentParser(description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--train", default="/tmp/mnist_train.npz", help="training npz (image, label)")
  p.add_argument("--eval", default="/tmp/mnist_eval.npz", help="evaluation npz (image, label)")
  p.add_argument("--workdir_root", default=f"/tmp/vaelab_experiments/{name}",
                 help="one workdir per run is made under it")
  p.add_argument("--steps", type=int, default=None,
                 help="num_train_steps of every run (default: each config's own)")
  p.add_argument("--seeds", default=seeds, help="comma-separated seeds; figures are their mean")
  p.add_argument("--verbose", action="store_true", help="the trainer's progress lines on stderr")
  return p


def seeds_of(args) -> list[int]:
  return [int(s) for s in str(args.seeds).split(",") if s.strip()]


def setup_logging(verbose: bool) -> None:
  from absl import logging
  logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
  # Orbax logs several INFO lines per checkpoint; keep the trainer's progress lines.
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= py_logging.WARNING or "/orbax/" not in r.pathname)


def note(msg: str) -> None:
  """Progress for people, on stderr: stdout holds only the tables and the JSON line."""
  print(msg, file=sys.stderr, flush=True)


def load_config(name: str, arg: str | None = None, overrides: dict | None = None):
  """configs/NAME.py's get_config(arg), with dotted-key overrides (a misspelled key fails)."""
  from vaelab import config_base
  path = os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg else "")
  return config_base.load_config(path, overrides)


def set_overrides(config, overrides: dict):
  from vaelab import config_base
  return config_base.set_overrides(config, overrides)


def with_overrides(config, overrides: dict):
  """A copy of `config` with `overrides` set; `config` is left as it was."""
  c = config.copy_and_resolve_references()
  c.lock()
  return set_overrides(c, overrides)


def data_overrides(args) -> dict:
  return {"data.name": "npz", "data.train_path": args.train, "data.eval_path": args.eval}


def common_overrides(args, seed: int) -> dict:
  out = data_overrides(args)
  out["seed"] = seed
  if args.steps is not None:
    out["num_train_steps"] = int(args.steps)
  return out


def check_data(args) -> None:
  for path in (args.train, args.eval):
    if not os.path.exists(path):
      raise SystemExit(
          f"{path} does not exist; make the MNIST split first:\n  .venv/bin/python "
          f"experiments/split_npz.py ../shared/data/mnist_5k.npz /tmp/mnist_train.npz "
          f"/tmp/mnist_eval.npz --eval 1000")


def workdir_for(root: str, tag: str, config) -> str:
  return os.path.join(root, f"{tag}_steps{int(config.num_train_steps)}_seed{int(config.seed)}")


def train(config, workdir: str) -> tuple[dict, float]:
  """Trains (or resumes) one run; returns (results.json dict, wall seconds)."""
  from vaelab.training import loop
  t = time.perf_counter()
  results = loop.train_and_evaluate(config, workdir)
  return results, time.perf_counter() - t


def restore(config, workdir: str, sources=None):
  """(Experiment, TrainState on the mesh) of the latest checkpoint in `workdir`."""
  from vaelab.training import experiment as experiment_lib
  from vaelab.training import workdir as workdir_lib
  exp = experiment_lib.build(config, sources)
  return exp, workdir_lib.restore_latest(exp, workdir)


def evaluate(config, workdir: str, variants: list[dict], sources=None) -> list[dict]:
  """The family's eval/ metrics of the latest checkpoint under each of `variants` (overrides
  of eval.* keys), without the probe and without rewriting the run's results.json.

  The checkpoint is restored once (model.init runs eagerly and is slow on a busy CPU); only
  the evaluator, which closes over the eval.* settings, is built per variant.
  """
  from vaelab.evaluate.evaluator import Evaluator
  exp, state = restore(config, workdir, sources)
  out = []
  for overrides in variants:
    c = with_overrides(config, overrides)
    out.append(Evaluator(exp.family, c, exp.model, exp.mesh, exp.eval_source)(state, exp.hparams))
  return out


def apply_batched(exp, variables, method: str, images: np.ndarray, batch: int = 500):
  """model.apply(variables, images, method=method) in batches, as one numpy array."""
  import jax
  fn = jax.jit(lambda v, x: exp.model.apply(v, x, method=method))
  return np.concatenate([np.asarray(fn(variables, images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def eval_images(exp) -> np.ndarray:
  src = exp.eval_source
  return src.get(np.arange(len(src)))["image"]


def mean(values) -> float:
  values = [float(v) for v in values]
  return float(np.mean(values)) if values else float("nan")


def fmt(value, spec: str = ".3f") -> str:
  """A number for a table; strings pass through, NaN and None read n/a."""
  if value is None:
    return "n/a"
  if isinstance(value, str):
    return value
  if isinstance(value, float) and math.isnan(value):
    return "n/a"
  return format(value, spec)


def pct(value) -> str:
  """A fraction as a percentage with two decimals, the papers' style."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  return f"{100 * float(value):.2f}%"


# Tables printed by this process, as Markdown, for its results page (write_page).
_PAGE_TABLES: list[str] = []


def _markdown(headers, cells, title) -> str:
  esc = lambda c: str(c).replace("|", "\\|")
  out = [f"**{esc(title)}**", ""] if title else []
  out.append("| " + " | ".join(map(esc, headers)) + " |")
  out.append("|" + "---|" * len(headers))
  out += ["| " + " | ".join(map(esc, r)) + " |" for r in cells]
  return "\n".join(out)


def write_page(path: str | None = None) -> str | None:
  """Puts this run's tables and command into its results page (VAELAB_RESULTS_PAGE, or
  `path`), between `<!-- tables: experiments/NAME.py -->` and `<!-- end tables -->`: a rerun
  refreshes the page instead of a hand edit. Appends the block where the page has none."""
  path = path or os.environ.get("VAELAB_RESULTS_PAGE")
  if not path or not _PAGE_TABLES:
    return None
  script = "experiments/" + os.path.basename(sys.argv[0])
  begin, end = f"<!-- tables: {script} -->", "<!-- end tables -->"
  command = " ".join(["python", script, *sys.argv[1:]])
  block = "\n\n".join([begin, f"`{command}`", *_PAGE_TABLES, end])
  text = open(path).read() if os.path.exists(path) else ""
  if begin in text and end in text[text.index(begin):]:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
  else:
    text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
  return path


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
  """Columns aligned: the first to the left, the others to the right (and kept as Markdown
  for the results page, `write_page`)."""
  cells = [[str(c) for c in row] for row in rows]
  _PAGE_TABLES.append(_markdown(headers, cells, title))
  widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
  line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths)))
  if title:
    print(title)
  print(line(headers))
  print("  ".join("-" * w for w in widths))
  for r in cells:
    print(line(r))
  print()


def rounded(obj, digits: int = 5):
  """Floats rounded for the JSON line (NaN becomes null, so that the line is valid JSON)."""
  if isinstance(obj, float):
    return None if math.isnan(obj) else round(obj, digits)
  if isinstance(obj, dict):
    return {k: rounded(v, digits) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [rounded(v, digits) for v in obj]
  if isinstance(obj, np.generic):
    return rounded(obj.item(), digits)
  return obj


def print_json(obj: dict) -> None:
  """The last line of stdout: the figures, for programs. With VAELAB_RESULTS_PAGE set, the
  tables printed before it also go into that results page (write_page)."""
  write_page()
  print(json.dumps(rounded(obj)), flush=True)


def torch_state_dict(path: str, script: str) -> dict:
  """{name: numpy array} of a PyTorch state dict file (a checkpoint's "state_dict" if it is
  one). torch is imported here only: the converters are the one place vaelab reads it."""
  try:
    import torch
  except ImportError as e:
    raise SystemExit(f"{script} reads PyTorch files and needs torch: pip install torch (CPU "
                     f"wheels suffice), then run it again") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(sd, dict) and "state_dict" in sd:
    sd = sd["state_dict"]
  return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def write_weights(out: str, arrays: dict, check) -> None:
  """Writes a converted weights .npz via a temporary file and a rename, checks it as a run's
  validate will (`check(path)`), and prints what it holds and the JSON line."""
  tmp = out + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, out)
  check(out)
  print(f"{out}: {len(arrays)} arrays, {sum(v.size for v in arrays.values()):,} numbers")
  print(json.dumps({"out": out, "arrays": len(arrays)}))


def timed_steps(fn, state, steps: int):
  """Runs `steps` calls state = fn(state), timed from a ready state to a ready state;
  returns (the new state, seconds per step)."""
  import jax
  state = jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(steps):
    state = fn(state)
  jax.block_until_ready(state)
  return state, (time.perf_counter() - t) / steps
