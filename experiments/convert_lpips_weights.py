"""Writes the LPIPS-VGG16 weights file (`loss.lpips_weights`) from the published PyTorch files.

  python experiments/convert_lpips_weights.py --vgg16=vgg16-397923af.pth \
      --lin=PerceptualSimilarity/lpips/weights/v0.1/vgg.pth --out=lpips_vgg.npz

--vgg16: torchvision's ImageNet VGG16 state dict
  (https://download.pytorch.org/models/vgg16-397923af.pth, what `torchvision.models.vgg16(
  weights="IMAGENET1K_V1")` downloads into ~/.cache/torch/hub/checkpoints/).
--lin: the lpips package's v0.1 linear layers for VGG (lpips/weights/v0.1/vgg.pth in the
  lpips pip package or github.com/richzhang/PerceptualSimilarity).
Only this script needs torch (to unpickle the two files); vaelab reads the .npz it writes.
"""
import argparse
import json
import os

import numpy as np

from vaelab.losses import lpips


def _state_dict(path: str) -> dict:
  try:
    import torch
  except ImportError as e:
    raise SystemExit("convert_lpips_weights.py reads PyTorch files and needs torch: "
                     "pip install torch (CPU wheels suffice), then run it again") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(sd, dict) and "state_dict" in sd:
    sd = sd["state_dict"]
  return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--vgg16", required=True, help="torchvision's vgg16 state dict (.pth)")
  p.add_argument("--lin", required=True, help="lpips' weights/v0.1/vgg.pth")
  p.add_argument("--out", required=True, help="the .npz to write")
  a = p.parse_args()
  arrays = lpips.convert_state_dicts(_state_dict(a.vgg16), _state_dict(a.lin))
  tmp = a.out + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, a.out)
  lpips.check_weights(a.out)  # what a run's validate will check
  print(f"{a.out}: {len(arrays)} arrays, "
        f"{sum(v.size for v in arrays.values()):,} numbers")
  print(json.dumps({"out": a.out, "arrays": len(arrays)}))


if __name__ == "__main__":
  main()
