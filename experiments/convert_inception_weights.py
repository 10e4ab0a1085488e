"""Writes the FID Inception weights file (`eval.inception_weights`) from pytorch-fid's weights.

  python experiments/convert_inception_weights.py \
      --weights=pt_inception-2015-12-05-6726825d.pth --out=fid_inception.npz

--weights: the state dict pytorch-fid publishes for its FIDInceptionV3
  (https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/
  pt_inception-2015-12-05-6726825d.pth, the port of TensorFlow's 2015-12-05 FID graph).
Each convolution's BatchNorm is folded into its kernel and bias. Only this script needs
torch (to unpickle the file); vaelab reads the .npz it writes.
"""
import argparse
import json
import os

import numpy as np

from vaelab.evaluate import inception


def _state_dict(path: str) -> dict:
  try:
    import torch
  except ImportError as e:
    raise SystemExit("convert_inception_weights.py reads a PyTorch file and needs torch: "
                     "pip install torch (CPU wheels suffice), then run it again") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(sd, dict) and "state_dict" in sd:
    sd = sd["state_dict"]
  return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--weights", required=True, help="pt_inception-2015-12-05-6726825d.pth")
  p.add_argument("--out", required=True, help="the .npz to write")
  a = p.parse_args()
  arrays = inception.convert_state_dict(_state_dict(a.weights))
  tmp = a.out + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, a.out)
  inception.check_weights(a.out)  # what a run's validate will check
  print(f"{a.out}: {len(arrays)} arrays, "
        f"{sum(v.size for v in arrays.values()):,} numbers")
  print(json.dumps({"out": a.out, "arrays": len(arrays)}))


if __name__ == "__main__":
  main()
