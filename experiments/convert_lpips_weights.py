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

import common
from vaelab.losses import lpips


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--vgg16", required=True, help="torchvision's vgg16 state dict (.pth)")
  p.add_argument("--lin", required=True, help="lpips' weights/v0.1/vgg.pth")
  p.add_argument("--out", required=True, help="the .npz to write")
  a = p.parse_args()
  script = "convert_lpips_weights.py"
  arrays = lpips.convert_state_dicts(common.torch_state_dict(a.vgg16, script),
                                     common.torch_state_dict(a.lin, script))
  common.write_weights(a.out, arrays, lpips.check_weights)


if __name__ == "__main__":
  main()
