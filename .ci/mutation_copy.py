"""Prepares a copy of the repository for mutation testing (run by `.ci/mutation`).

mutmut skips decorated functions, and it learns which tests cover a function
by seeing the function called. Two changes to the copy, none to what it
computes, let it mutate and test the whole numerical core:

- every decorator of a function or method in the files it mutates
  (`jax.jit`, `functools.partial(jax.jit, ...)`, `functools.lru_cache`,
  `property`, `classmethod`, `functools.cached_property`) is applied after the
  `def` instead (`f = decorator(f)`, in the class body for a method), so the
  function is mutated and the jitted or cached wrapper calls the mutant;
- `tests/conftest.py` gains two hooks: `jax.clear_caches()` after every test,
  so that each test traces the jitted functions anew (else a test reusing an
  earlier test's compilation would not be seen to cover what it calls), and
  an order of tests from the fastest to the slowest, by the durations of
  mutmut's stats run, so that a mutant is killed by its fastest failing test.

Usage: `python .ci/mutation_copy.py` in the root of the copy.
"""

import ast
import pathlib
import tomllib

CONFTEST_HOOKS = """

# --- added by .ci/mutation_copy.py (mutation testing only) ---
import json as _json
import pathlib as _pathlib


@pytest.fixture(autouse=True)
def _fresh_jit_caches():
    yield
    jax.clear_caches()


def pytest_collection_modifyitems(config, items):
    stats = _pathlib.Path(__file__).resolve().parents[1] / "mutmut-stats.json"
    if stats.exists():
        seconds = _json.loads(stats.read_text()).get("duration_by_test", {})
        items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))
"""


def undecorate(path: pathlib.Path) -> list[str]:
    """Moves the decorators of `path`'s module-level functions after their
    `def`; returns the names of the functions moved."""
    source = path.read_text()
    lines = source.split("\n")
    tree = ast.parse(source)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef):
            functions += [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    moves = []
    for node in functions:
        if node.decorator_list:
            first = node.decorator_list[0].lineno - 1
            wrappers = [ast.get_source_segment(source, d) for d in node.decorator_list]
            indent = " " * node.col_offset
            lines_of = (first, node.lineno - 1, node.end_lineno)
            moves.append((*lines_of, indent, node.name, wrappers))
    for first, def_line, end, indent, name, wrappers in sorted(moves, reverse=True):
        applied = name
        for wrapper in reversed(wrappers):  # the innermost decorator first
            applied = f"({wrapper})({applied})"
        lines.insert(end, f"\n{indent}{name} = {applied}\n")
        del lines[first:def_line]
    path.write_text("\n".join(lines))
    return [name for *_, name, _ in moves]


def main() -> None:
    config = tomllib.loads(pathlib.Path("pyproject.toml").read_text())
    for name in config["tool"]["mutmut"]["only_mutate"]:
        moved = undecorate(pathlib.Path(name))
        print(f"{name}: decorators applied after the def of {moved or 'none'}")
    conftest = pathlib.Path("tests/conftest.py")
    conftest.write_text(conftest.read_text() + CONFTEST_HOOKS)


if __name__ == "__main__":
    main()
