"""Imports point one way: each package imports only the layers below it.

Every `import optimas_jax.X` and `from optimas_jax.X import ...` counts, at
module level or inside a function (a lazy import is still a dependency).
"""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).parents[1] / "optimas_jax"

# Bottom to top; a package may import any package of an earlier layer.
LAYERS = [
    {"core", "host_memory"},
    {"atomic", "metrics_log", "runtime", "checkpoint"},
    {"models", "sandbox", "system"},
    {"llm"},
    {"tasks", "collect", "rl"},
    {"lrf", "optimize"},
    {"loop"},
    {"peers"},
    {"methods"},
    {"adapt", "jobs"},
    {"main", "compare", "serve"},
]


def _imports() -> dict[str, set[str]]:
  deps = collections.defaultdict(set)
  for path in ROOT.rglob("*.py"):
    package = path.relative_to(ROOT).parts[0].removesuffix(".py")
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optimas_jax"):
        parts = node.module.split(".")
        names = [a.name for a in node.names] if len(parts) == 1 else [parts[1]]
      elif isinstance(node, ast.Import):
        names = [a.name.split(".")[1] for a in node.names if a.name.startswith("optimas_jax.")]
      deps[package].update(n for n in names if n != package)
  return deps


def test_every_package_has_a_layer():
  packages = {p.name.removesuffix(".py") for p in ROOT.iterdir()
              if p.name != "__init__.py" and (p.suffix == ".py" or (p / "__init__.py").exists())}
  assert packages == set().union(*LAYERS)


def test_imports_point_down():
  layer = {name: i for i, names in enumerate(LAYERS) for name in names}
  upward = {package: sorted(d for d in deps if layer[d] >= layer[package])
            for package, deps in _imports().items()}
  assert {p: d for p, d in upward.items() if d} == {}
