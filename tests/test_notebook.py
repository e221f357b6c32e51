"""The quickstart notebook runs top to bottom on the shipped testbed (its default sizes)."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes():
  path = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}})
  client.execute()  # raises CellExecutionError when a cell fails
  outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []))
  assert "weighted (last)" in outputs and "x" in outputs
