"""What the test suite costs, by family and by contract case.

Runs the suite as `make test` does (two workers, a file each) with pytest's JUnit XML and
the 4-device contract subprocess's own timings (VAELAB_SUITE_COSTS), then adds up:
- per family: its test file (tests/test_<family>.py), and the tests whose parameter is one
  of its contract cases or config files (tests/test_contract.py, tests/test_configs.py) or
  the family itself; beside them, the 4-device subprocess's seconds per case (and per
  family for its resume, populations and evaluation), which run while the contract's tests
  wait for them (so they are inside those tests' seconds, not added to them);
- the step's own options (the `step-...` contract cases) and the library's other tests.
Seconds are each test's setup, call and teardown as pytest reports them; the suite's
CPU-minutes and the reference loop's speed are pytest's last lines (tests/conftest.py).

  .venv/bin/python experiments/suite_costs.py            # runs the suite (~10 min)
  .venv/bin/python experiments/suite_costs.py --junit J.xml --four DIR/contract_four_devices.json
      # reads a run made with PYTEST_ARGS=--junitxml=J.xml and VAELAB_SUITE_COSTS=DIR

The last line of stdout is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def run_suite(out_dir: str) -> tuple[str, str]:
  junit = os.path.join(out_dir, "junit.xml")
  env = dict(os.environ, VAELAB_SUITE_COSTS=out_dir)
  subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile",
                  f"--junitxml={junit}", "tests"], cwd=ROOT, env=env, check=False)
  return junit, os.path.join(out_dir, "contract_four_devices.json")


def _tests(junit: str):
  """(file stem, test name, seconds) of every test case in the report."""
  for case in ET.parse(junit).getroot().iter("testcase"):
    stem = case.get("classname", "").split(".")[-1]
    yield stem, case.get("name", ""), float(case.get("time", 0))


def _case_of(name: str) -> str | None:
  m = re.search(r"\[(.*)\]$", name)
  return m.group(1) if m else None


def costs(junit: str, four: str | None) -> dict:
  import contract_cases as cc  # pylint: disable=g-import-not-at-top
  from vaelab import models  # pylint: disable=g-import-not-at-top
  families = set(models.FAMILIES)
  cases = set(cc.all_cases())

  def owner(case: str) -> str:
    return "the step's options" if case.startswith("step-") else cc.family_of(case)

  def family_of_test(stem: str, name: str) -> tuple[str, str | None]:
    """(who owns a test, its contract case if it checks one): a parameter naming a case
    (a config file's name, with or without .py) or a family, else the test file's name."""
    param = (_case_of(name) or "").split(":")[0]
    param = param[:-3] if param.endswith(".py") else param
    if param in cases:
      return owner(param), param
    if param in families:
      return param, None
    return (stem[5:] if stem[5:] in families else "library (other tests)"), None

  rows = collections.defaultdict(lambda: {"tests": 0, "own_files_s": 0.0,
                                          "contract_configs_s": 0.0, "four_devices_s": 0.0})
  per_case = collections.defaultdict(float)
  library = collections.defaultdict(float)  # the other tests, by file
  for stem, name, seconds in _tests(junit):
    key, case = family_of_test(stem, name)
    if key == "library (other tests)":
      library[stem] += seconds
    column = "contract_configs_s" if stem in ("test_contract", "test_configs") else "own_files_s"
    rows[key][column] += seconds
    rows[key]["tests"] += 1
    if case:
      per_case[case] += seconds
  if four and os.path.exists(four):
    with open(four) as f:
      for name, seconds in json.load(f).items():
        rows[owner(name.split(":")[0])]["four_devices_s"] += seconds
  for r in rows.values():
    r["total_s"] = r["own_files_s"] + r["contract_configs_s"]
  return {"families": dict(rows), "cases": dict(per_case), "library": dict(library)}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--junit", help="a JUnit XML report of the suite (else the suite is run)")
  ap.add_argument("--four", help="the 4-device subprocess's contract_four_devices.json")
  ap.add_argument("--top", type=int, default=15, help="contract cases listed")
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    junit, four = (args.junit, args.four) if args.junit else run_suite(tmp)
    figures = costs(junit, four)
  fam = sorted(figures["families"].items(), key=lambda kv: -kv[1]["total_s"])
  common.print_table(
      ["family", "tests", "its test files s", "contract and config tests s", "total s",
       "4-device subprocess s"],
      [[name, r["tests"], f"{r['own_files_s']:.0f}", f"{r['contract_configs_s']:.0f}",
        f"{r['total_s']:.0f}", f"{r['four_devices_s']:.0f}"] for name, r in fam],
      "the suite's seconds by family (each test's own; the 4-device subprocess runs beside "
      "the contract's tests, which wait for it)")
  top = sorted(figures["cases"].items(), key=lambda kv: -kv[1])[:args.top]
  common.print_table(["contract case", "seconds in its tests"],
                     [[c, f"{s:.1f}"] for c, s in top], "the costliest contract cases")
  files = sorted(figures["library"].items(), key=lambda kv: -kv[1])[:args.top]
  common.print_table(["test file", "seconds"], [[f, f"{s:.1f}"] for f, s in files],
                     "the costliest of the library's other test files")
  common.print_json(common.rounded(figures, 1))


if __name__ == "__main__":
  main()
