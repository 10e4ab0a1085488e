"""What the test suite costs, by family and by contract case.

Runs the suite as `make test` does (two workers, a file each) with pytest's JUnit XML and
the 4-device contract subprocess's own timings (VAELAB_SUITE_COSTS), then adds up:
- per family: its test file(s) (tests/test_<family>.py), its contract cases on 1 device
  (the tests of tests/test_contract.py whose case trains it) and on 4 devices (the
  subprocess's seconds per case, and per family for its resume, populations and
  evaluation);
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

  rows = collections.defaultdict(lambda: {"tests": 0, "files_s": 0.0, "contract_1_s": 0.0,
                                          "contract_4_s": 0.0})
  per_case = collections.defaultdict(float)
  for stem, name, seconds in _tests(junit):
    case = (_case_of(name) or "").split(":")[0]
    if stem == "test_contract" and case in cases:
      key, column = owner(case), "contract_1_s"
      per_case[case] += seconds
    elif stem[5:] in families:
      key, column = stem[5:], "files_s"
    else:
      key, column = "library (other tests)", "files_s"
    rows[key][column] += seconds
    rows[key]["tests"] += 1
  if four and os.path.exists(four):
    with open(four) as f:
      for name, seconds in json.load(f).items():
        case = name.split(":")[0]
        rows[owner(case)]["contract_4_s"] += seconds
        per_case[case] += seconds
  for r in rows.values():
    r["total_s"] = r["files_s"] + r["contract_1_s"] + r["contract_4_s"]
  return {"families": dict(rows), "cases": dict(per_case)}


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
      ["family", "tests", "test files s", "contract 1 device s", "contract 4 devices s",
       "total s"],
      [[name, r["tests"], f"{r['files_s']:.0f}", f"{r['contract_1_s']:.0f}",
        f"{r['contract_4_s']:.0f}", f"{r['total_s']:.0f}"] for name, r in fam],
      "the suite's seconds by family (each test's own; two workers share the wall time)")
  top = sorted(figures["cases"].items(), key=lambda kv: -kv[1])[:args.top]
  common.print_table(["contract case", "seconds (1 and 4 devices)"],
                     [[c, f"{s:.1f}"] for c, s in top], "the costliest contract cases")
  common.print_json(common.rounded(figures, 1))


if __name__ == "__main__":
  main()
