"""The package's layering, enforced (read with ``ast``, nothing imported).

Bottom first: ``utils``; ``data`` and ``evaluation``; ``datasets``; ``nn``; ``prompts`` and
``features``; ``models``; ``training``; ``export`` and ``cli``. A module may import its own
subpackage or a lower layer — never a higher one, never a sibling of the same layer (``cli`` may
use ``export``) — and the module-level imports form no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kgseqgraph"

RANK = {"utils": 0, "testing": 0, "data": 1, "evaluation": 1, "datasets": 2, "nn": 3,
        "prompts": 4, "features": 4, "models": 5, "training": 6, "export": 7, "cli": 8,
        "__main__": 9, "": 10}


def _module_name(path: Path) -> str:
    parts = ["kgseqgraph", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported kgseqgraph module, line, at module level) of every import in ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for node in tree.body:  # imports inside a module-level `if TYPE_CHECKING:` / try still count
        if isinstance(node, (ast.If, ast.Try)):
            top.update(id(n) for n in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "kgseqgraph" or name.startswith("kgseqgraph."):
                out.append((name, node.lineno, id(node) in top))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_higher_or_sibling_layer():
    problems = []
    for module, path in sorted(_modules().items()):
        src = _layer(module)
        for target, line, _ in _imports(path):
            dst = _layer(target)
            if dst == src or (src, dst) == ("cli", "export"):
                continue
            if dst not in RANK or src not in RANK:
                problems.append(f"{path}:{line}: unknown layer of {target} or {module}")
            elif RANK[dst] >= RANK[src]:
                problems.append(f"{path}:{line}: {module} ({src or 'kgseqgraph'}) imports "
                                f"{target} ({dst or 'kgseqgraph'})")
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_module_level_imports_have_no_cycle():
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, _, at_top in _imports(path):
            # `from .x import name` may name a submodule or an attribute: resolve to a module
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if at_top and target != module and target in modules:
                graph[module].add(target)
    # a package's __init__ importing its own submodules is how packages work: not a cycle
    # unless a submodule imports the package back at module level
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                if not all(a.startswith(b + ".") for a, b in zip(cycle[1:], cycle)):
                    cycles.append(" -> ".join(cycle))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layering_test_sees_a_violation(tmp_path):
    """The check itself: an upward import in a planted module is reported."""
    fake = tmp_path / "kgseqgraph"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "bad.py").write_text("from ..models import build_model\n")
    global PACKAGE
    old, PACKAGE = PACKAGE, fake
    try:
        try:
            test_no_module_imports_a_higher_or_sibling_layer()
        except AssertionError as err:
            assert "kgseqgraph.data.bad (data) imports kgseqgraph.models" in str(err)
        else:  # pragma: no cover
            raise AssertionError("the upward import was not reported")
    finally:
        PACKAGE = old
