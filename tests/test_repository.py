"""The README's commands are the ones CI runs; links in the docs lead somewhere; imports flow one way."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
  command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
  assert "pytest" in command
  assert command in (ROOT / "README.md").read_text()


def test_relative_links_in_tracked_markdown_resolve():
  tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
  assert "README.md" in tracked
  broken = []
  for name in tracked:
    path = ROOT / name
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
      target = target.split("#")[0]
      if target and not re.match(r"[a-z]+:", target) and not (path.parent / target).exists():
        broken.append(f"{name}: {target}")
  assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def _project_imports() -> dict[str, set[str]]:
  """module -> the project modules it imports (at any depth in the file), for every project module."""
  import ast
  modules = {}
  for package in ("rfa_jax", "lra", "benchmarks", "studies"):
    for path in sorted((ROOT / package).rglob("*.py")):
      parts = path.relative_to(ROOT).with_suffix("").parts
      modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  graph = {}
  for name, path in modules.items():
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        imported.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
        imported.update(submodules or {node.module})
    # Importing a submodule runs its package's __init__ first: that edge is not a dependency.
    graph[name] = {m for m in imported if m in modules and m != name and not name.startswith(m + ".")}
  return graph


def test_no_import_cycle_between_project_modules():
  graph = _project_imports()
  state = {}

  def visit(module, path):
    state[module] = "open"
    for imported in sorted(graph[module]):
      if state.get(imported) == "open":
        raise AssertionError("import cycle: " + " -> ".join(path[path.index(imported):] + [imported]))
      if imported not in state:
        visit(imported, path + [imported])
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])


def test_imports_flow_one_way():
  for module, imported in _project_imports().items():
    layer = module.split(".")[0]
    allowed = {"rfa_jax": {"rfa_jax"}, "lra": {"rfa_jax", "lra"},
               "benchmarks": {"rfa_jax", "lra", "benchmarks"},
               "studies": {"rfa_jax", "lra", "studies"}}[layer]
    assert {m.split(".")[0] for m in imported} <= allowed, (module, imported)


def test_importing_the_library_loads_no_harness_or_tool_dependency():
  import subprocess
  import sys
  code = ("import sys, rfa_jax; heavy = ('lra', 'benchmarks', 'studies', 'tensorflow_datasets', "
          "'grain', 'orbax', 'ml_collections', 'matplotlib', 'tensorboardX'); "
          "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
  loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
  assert loaded == "[]"
