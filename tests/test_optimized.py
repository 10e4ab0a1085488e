"""The programs users run: every other test compiles with most of XLA's optimizations off
(tests/conftest.py), under which XLA:CPU does not contract a * b + c into fused
multiply-adds, so the bitwise device-vs-host checks never meet the hazard they guard
against. Here they run again, in a process with the optimizations on, with one case of the
run contract (1 vs 4 devices, resume)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

# Slow (XLA's optimizations on: every compile at full cost): left out of `make test-fast`.
pytestmark = pytest.mark.slow

CHECKS = ["tests/test_dsprites.py::test_rounded_products_are_not_fused_into_adds",
          "tests/test_dsprites.py::test_device_form_is_bitwise_the_host_path",
          "tests/test_pipeline.py::test_device_batches_are_the_host_batches_bitwise",
          "tests/test_pipeline.py::test_a_run_on_the_device_path_is_the_host_path_run_bitwise",
          "tests/test_contract.py::test_one_and_four_devices_give_the_same_run",
          "tests/test_contract.py::test_resumed_run_is_bitwise_the_uninterrupted_one"]


def test_the_bitwise_checks_and_a_contract_case_hold_with_xla_optimizations_on():
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="0", VAELAB_CONTRACT_CASES="vae_mnist")
  done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "-p", "no:xdist", *CHECKS], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=1500)
  assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
  assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
