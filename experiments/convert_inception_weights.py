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

import common
from vaelab.evaluate import inception


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--weights", required=True, help="pt_inception-2015-12-05-6726825d.pth")
  p.add_argument("--out", required=True, help="the .npz to write")
  a = p.parse_args()
  arrays = inception.convert_state_dict(
      common.torch_state_dict(a.weights, "convert_inception_weights.py"))
  common.write_weights(a.out, arrays, inception.check_weights)


if __name__ == "__main__":
  main()
