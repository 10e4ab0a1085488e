"""experiments/quickstart.ipynb runs top to bottom in a fresh kernel (shortened to a few
steps per run) and shows its pictures and the population's table."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

# Slow (a whole notebook in a kernel): left out of `make test-fast`.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow]


def test_quickstart_notebook_executes_and_plots():
  path = os.path.join(ROOT, "experiments", "quickstart.ipynb")
  nb = nbformat.read(path, as_version=4)
  setup = next(c for c in nb.cells if "STEPS = " in c.source)
  setup.source = setup.source.replace("STEPS = 300", "STEPS = 20")
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 4  # images/decodes/samples, traversal, MI matrix, KL against beta
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert all(f"beta={b}: elbo" in text for b in (1.0, 2.0, 4.0, 8.0)), text[-2000:]
  assert "MIG " in text and "reloaded 4.0 at step 20" in text, text[-2000:]
