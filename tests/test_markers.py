"""Every test that reads the shared real datasets carries the ``realdata`` marker (so
``-m "not realdata"`` really leaves them out). Read with ``ast``: a test counts as reading real
data when it calls ``require_data`` or takes a fixture that does."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _real_data_fixtures() -> set[str]:
    names = set()
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    "fixture" in ast.dump(d) for d in node.decorator_list) \
                    and "require_data" in ast.dump(node):
                names.add(node.name)
    return names


def _unmarked(path: Path, fixtures: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    module_marked = any(isinstance(n, ast.Assign) and "realdata" in ast.dump(n)
                        and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                        for n in tree.body)
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
            continue
        reads = "require_data" in ast.dump(node) or any(a.arg in fixtures
                                                         for a in node.args.args)
        marked = module_marked or any("realdata" in ast.dump(d) for d in node.decorator_list)
        if reads and not marked:
            out.append(f"{path.relative_to(TESTS)}::{node.name}")
    return out


def test_real_data_tests_are_marked():
    fixtures = _real_data_fixtures()
    assert "ml100k_graph" in fixtures
    missing = [t for p in sorted(TESTS.rglob("test_*.py")) if p.name != Path(__file__).name
               for t in _unmarked(p, fixtures)]
    assert not missing, "add @pytest.mark.realdata to: " + ", ".join(missing)


def test_the_check_sees_an_unmarked_test(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text("def test_x():\n    require_data('ml-100k')\n\n"
                       "def test_y(ml100k_graph):\n    pass\n")
    assert _unmarked_in(planted) == ["test_x", "test_y"]


def _unmarked_in(path: Path) -> list[str]:
    global TESTS
    old, TESTS = TESTS, path.parent
    try:
        return [t.split("::")[1] for t in _unmarked(path, {"ml100k_graph"})]
    finally:
        TESTS = old
