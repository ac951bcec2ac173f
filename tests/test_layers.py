"""The import layers of ``src/guided_inference``: every import runs down (or stays in its
layer), and no modules import each other in a circle.

Read from the source with ``ast`` (nothing is imported): every ``import`` and ``from ...
import``, at module level and inside functions (a late import is still a dependency), an
edge to the module it names (``from pkg import mod`` to ``pkg.mod`` when that is a module,
else to ``pkg``). Importing ``a.b`` is not counted as importing the package ``a`` too.

``LAYERS`` is the house plan, lowest first, as ``docs/architecture.md`` draws it. A module
belongs to the longest entry that is its name or a package above it, so a new file in
``backends/`` is a backend, and a new top-level file must be placed here by hand.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "guided_inference"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # configuration and records, the model catalogue, pure helpers: nothing here runs a model
    ("records", ("guided_inference", "config", "buildinfo", "distribution", "steps", "trace", "transcript", "prompts",
                 "models", "atomic", "intervals", "render")),
    # how a model runs: the Backend protocol, one file per backend, the aliases that name them
    ("backends", ("backends", "doctor")),
    # when to consult: the policies, the learned router, teacher forcing's per-token features
    ("policies", ("policies", "router", "teacher")),
    # the guided loop, its replay (calibration), the config it is run with, the pair it runs on
    ("engine", ("engine", "handoff", "checking", "replay", "user_config", "model_pair")),
    # datasets: load, prompt, grade
    ("tasks", ("tasks",)),
    # runs of the pair over problems into results files, calibration, machine rates; recorded traces
    ("experiments", ("evaluation",)),
    # offline readings of finished traces (teacher-forced): divergence, PRM800K, analyze
    ("studies", ("study",)),
    # tables, cost models, plots, HTML: pure functions over rows and lines
    ("reporting", ("reporting",)),
    # the pair behind an OpenAI-compatible HTTP server
    ("serve", ("serve",)),
    # the `guided` command: parses flags, calls the library; nothing imports it
    ("cli", ("cli",)),
)

# Known exceptions: (importer, imported) -> why it is still here; whoever removes the import removes
# its entry, and the test fails while an entry matches no import, so none outlives its reason.
# Empty: a new exception needs its reason written here (and in docs/architecture.md).
KNOWN: dict[tuple[str, str], str] = {}


def _short(module: str) -> str:
    return module.removeprefix("guided_inference.") if module != "guided_inference" else module


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted short name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[_short(".".join(parts))] = (path, is_package)
    return found


def _resolve(name: str, known) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (short form)."""
    while name:
        if _short(name) in known:
            return _short(name)
        name = name.rpartition(".")[0]
    return None


def imports() -> dict[str, dict[str, int]]:
    """importer -> {imported: first line}, both short module names, within the package only."""
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for module, (path, is_package) in known.items():
        full = "guided_inference" if module == "guided_inference" else f"guided_inference.{module}"
        package = full if is_package else full.rpartition(".")[0]
        out: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name of ``base``
            for target in targets:
                if not target.startswith("guided_inference"):
                    continue
                hit = _resolve(target, known)
                if hit is not None and hit != module:
                    out.setdefault(hit, node.lineno)
        edges[module] = out
    return edges


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for i, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best_len:
                best, best_len = i, len(entry)
    return best


def _where(importer: str, imported: str, line: int) -> str:
    path = modules()[importer][0].relative_to(ROOT)
    a, b = layer_of(importer), layer_of(imported)
    return f"{path}:{line}: {importer} ({LAYERS[a][0]}) -> {imported} ({LAYERS[b][0]})"


def circles(edges: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """Each set of modules that import each other in a loop (Tarjan's strongly connected
    components of two or more modules): (one shortest loop through its first module, all
    its modules)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append((_loop(sorted(component), edges), sorted(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _loop(component: list[str], edges) -> list[str]:
    """A shortest way from the component's first module back to itself (breadth first)."""
    inside, start = set(component), component[0]
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(edges.get(path[-1], {})):
            if w == start:
                return path + [start]
            if w in inside and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return component


def _checked_edges() -> dict[str, dict[str, int]]:
    return {a: {b: line for b, line in out.items() if (a, b) not in KNOWN} for a, out in imports().items()}


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules() if layer_of(m) is None)
    assert not missing, ("modules in no layer (add each to LAYERS in tests/test_layers.py and to the picture in "
                         "docs/architecture.md): " + ", ".join(missing))


def test_no_import_runs_upward():
    upward = [_where(a, b, line) for a, out in _checked_edges().items() for b, line in out.items()
              if layer_of(b) is not None and layer_of(a) is not None and layer_of(b) > layer_of(a)]
    assert not upward, "imports from a lower layer to a higher one:\n  " + "\n  ".join(sorted(upward))


def test_no_import_circles():
    edges = _checked_edges()
    found = circles(edges)
    lines = [" -> ".join(loop) + (f" (the circle also holds {', '.join(m for m in members if m not in loop)})"
                                  if len(members) > len(loop) - 1 else "") for loop, members in found]
    assert not found, "modules that import each other in a circle:\n  " + "\n  ".join(lines)


def test_known_exceptions_still_exist():
    edges = imports()
    stale = [f"{a} -> {b}" for (a, b) in KNOWN if b not in edges.get(a, {})]
    assert not stale, "KNOWN lists imports that are gone; remove their entries: " + ", ".join(stale)


def test_the_checks_see_what_they_must():
    # The walker itself: a late import inside a function counts, relative imports resolve,
    # and a circle or an upward import made up here is reported.
    edges = imports()
    assert "router" in edges["policies"]  # late, inside a function (_learned)
    assert "policies" not in edges["config"]  # config owns the policy parameters it checks
    assert "intervals" in edges["reporting.report"]  # from ..intervals import ...
    assert "cli.flags" in edges["cli.generate"]
    assert circles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [(["a", "b", "c", "a"],
                                                                                    ["a", "b", "c"])]
    assert layer_of("backends.llama_cpp") == layer_of("backends") < layer_of("engine")
    assert layer_of("reporting.report") > layer_of("evaluation.runner") == layer_of("evaluation")


@pytest.mark.parametrize("number,name", [(i, name) for i, (name, _) in enumerate(LAYERS)])
def test_the_architecture_page_draws_every_layer(number, name):
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert f"{number} {name}" in page, (f"docs/architecture.md has no '{number} {name}' in its layer picture; "
                                        "keep the picture beside LAYERS")


def test_each_folder_is_one_layer():
    # The folder layout shows the layers: every module of a package folder stands in the layer
    # of the folder itself, so a file's place in the tree says where it may import from.
    mixed = {}
    for name, (_, is_package) in modules().items():
        if "." in name:
            folder = name.split(".")[0]
            if layer_of(name) != layer_of(folder):
                mixed.setdefault(folder, []).append(name)
    assert not mixed, f"folders holding modules of other layers: {mixed}"
