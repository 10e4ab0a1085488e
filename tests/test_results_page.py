"""A reproduction script's tables go into its results page between its markers, so that a
rerun refreshes the page (experiments/common.py: print_table, print_json, write_page)."""
from __future__ import annotations

import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import common  # noqa: E402


def test_a_rerun_replaces_its_own_block_and_leaves_the_rest(tmp_path, monkeypatch, capsys):
  page = tmp_path / "page.md"
  page.write_text("# Study\n\nprose\n\n<!-- tables: experiments/other.py -->\nkept\n"
                  "<!-- end tables -->\n")
  monkeypatch.setattr(sys, "argv", ["experiments/study.py", "--steps", "10"])
  monkeypatch.setenv("VAELAB_RESULTS_PAGE", str(page))
  monkeypatch.setattr(common, "_PAGE_TABLES", [])
  common.print_table(["model", "MIG"], [["vae", 0.02], ["a|b", 0.1]], title="scores")
  common.print_json({"mig": 0.02})
  first = page.read_text()
  assert "kept" in first and first.startswith("# Study\n\nprose")
  assert "`python experiments/study.py --steps 10`" in first
  assert "| model | MIG |\n|---|---|\n| vae | 0.02 |\n| a\\|b | 0.1 |" in first
  monkeypatch.setattr(common, "_PAGE_TABLES", [])
  common.print_table(["model", "MIG"], [["vae", 0.03]])
  common.print_json({"mig": 0.03})
  second = page.read_text()
  assert second.count("<!-- tables: experiments/study.py -->") == 1
  assert "| vae | 0.03 |" in second and "0.02" not in second and "kept" in second
  assert capsys.readouterr().out.strip().splitlines()[-1] == '{"mig": 0.03}'
