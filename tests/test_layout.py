"""The package's layering: every module imports only its own package or the layers
below it, so no import runs against the architecture (the README's tour of the tree)."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ttcjax")

# Lowest first; a module may import its own unit and any unit of a lower layer.
LAYERS = (
    ("ttcjax.shipped",),
    ("ttcjax.models", "ttcjax.rundir", "ttcjax.metrics"),
    ("ttcjax.sampling", "ttcjax.compute", "ttcjax.parallel"),
    ("ttcjax.search", "ttcjax.rollouts"),
    ("ttcjax.sweep",),
    ("ttcjax.study",),
    ("ttcjax.tasks",),
    ("ttcjax.training",),
)


def _unit(module: str) -> str | None:
  """The layered unit a dotted module name belongs to (None: the package root)."""
  for layer in LAYERS:
    for unit in layer:
      if module == unit or module.startswith(unit + "."):
        return unit
  return None


def _layer(unit: str) -> int:
  return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _modules():
  for folder, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        yield dotted.removesuffix(".__init__"), path


def _imports(path: str) -> list[str]:
  """Every ttcjax module a file imports, at any depth (function bodies included)."""
  found = []
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ttcjax"):
      found += [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.startswith("ttcjax")]
  return found


def test_every_module_has_a_layer():
  assert [m for m, _ in _modules() if m != "ttcjax" and _unit(m) is None] == []


@pytest.mark.parametrize("module,path", list(_modules()))
def test_imports_follow_the_layers(module, path):
  if module == "ttcjax":
    return  # the public API sits above every layer
  own = _unit(module)
  against = [name for name in _imports(path)
             if _unit(name) is None or _layer(_unit(name)) > _layer(own)
             or (_layer(_unit(name)) == _layer(own) and _unit(name) != own)]
  assert against == [], f"{module} imports {against} against the layering"
