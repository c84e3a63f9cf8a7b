"""The documentation cannot go stale.

- Every Python block of the README runs, and the output it shows is the
  output it prints.
- Every Python block of a docs page runs when the site is built
  (markdown-exec, `exec="on"`), which renders what it prints; no page shows
  a pasted output.
- Every `python -m benchmarks.…` command of the README and the docs names a
  runnable module whose command line accepts the arguments shown. Those
  commands train and benchmark for minutes, so they are parsed, not run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import io
import itertools
import pathlib
import re
import runpy
import shlex
import sys
from collections.abc import Iterator

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
_SHELL = {"", "bash", "sh", "shell", "console"}
_COMMAND = re.compile(
    r"(?:^|\s)(?:\S*/)?python3?\s+-m\s+(?P<module>benchmarks(?:\.\w+)*)(?P<args>.*)$"
)


def _blocks(text: str) -> list[tuple[str, str, int, int]]:
    """The fenced blocks of a page: (info string, dedented body, start, end)."""
    blocks = []
    for m in _FENCE.finditer(text):
        indent = len(m["indent"])
        body = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        blocks.append((m["info"].strip(), body, m.start(), m.end()))
    return blocks


def _language(info: str) -> str:
    return info.split(maxsplit=1)[0] if info else ""


def _readme_examples() -> list[tuple[str, str | None]]:
    """The README's Python blocks, each with the output block that follows it.

    An output block is a `text` block right after the Python block, with only
    a line starting with "Output" between them.
    """
    text = README.read_text()
    blocks = _blocks(text)
    examples = []
    for (info, body, _, end), following in itertools.zip_longest(blocks, blocks[1:]):
        if _language(info) != "python":
            continue
        expected = None
        if following is not None and _language(following[0]) == "text":
            between = text[end : following[2]].strip()
            if between.startswith("Output"):
                expected = following[1]
        examples.append((body, expected))
    return examples


@pytest.mark.parametrize("index", range(len(_readme_examples())))
def test_readme_example_prints_what_it_shows(index):
    body, expected = _readme_examples()[index]
    out = io.StringIO()
    # A reader runs the example with JAX's default settings, not the suite's.
    # The outputs shown are the CPU's: a training run elsewhere (other conv
    # algorithms, other sums' orders) may end a last printed digit apart.
    with (
        jax.default_device(jax.devices("cpu")[0]),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
        contextlib.redirect_stdout(out),
    ):
        exec(compile(body, f"README.md, Python block {index + 1}", "exec"), {})
    if expected is not None:
        got = [line.rstrip() for line in out.getvalue().strip().splitlines()]
        assert got == [line.rstrip() for line in expected.strip().splitlines()]


# Pages with a Python block the build does not run; each entry fails the
# suite as soon as its page passes (strict), so the list only shrinks.
_NOT_RUN: set[str] = set()


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(
            page,
            marks=pytest.mark.xfail(
                page.name in _NOT_RUN,
                reason="a Python block the docs build does not run",
                strict=True,
            ),
        )
        for page in PAGES
    ],
    ids=lambda p: p.name,
)
def test_page_python_blocks_run_at_build_time(page):
    text = page.read_text()
    blocks = _blocks(text)
    for info, body, _, _ in blocks:
        if _language(info) == "python":
            assert re.search(r'\bexec="on"', info), (
                f'{page.name}: a Python block without exec="on" is not run by '
                f"the docs build:\n{body[:200]}"
            )
    for (info, _, _, end), (next_info, _, start, _) in itertools.pairwise(blocks):
        pasted = _language(info) == "python" and _language(next_info) == "text"
        assert not (pasted and text[end:start].strip().startswith("Output")), (
            f"{page.name}: a pasted output; the block's own output is rendered"
        )


def _command_lines(text: str) -> Iterator[str]:
    """Shell command lines of a page: those of its shell blocks, and its inline
    code spans (tables and prose)."""
    spans = text
    for info, body, start, end in reversed(_blocks(text)):
        spans = spans[:start] + spans[end:]
        if _language(info) in _SHELL:
            yield from body.replace("\\\n", " ").splitlines()
    for span in re.findall(r"`([^`\n]+)`", spans):
        yield span.replace("\\|", "|")


def _expand(args: list[str]) -> list[list[str]]:
    """`faces|celeb_a` and `{vae,vqgan}` alternatives: one command each, the
    k-th command taking every argument's k-th alternative (or its last)."""
    options = []
    for arg in args:
        brace = re.fullmatch(r"\{(.+)\}", arg)
        if brace:
            options.append(brace[1].split(","))
        elif "|" in arg:
            options.append(arg.split("|"))
        else:
            options.append([arg])
    n = max((len(o) for o in options), default=1)
    return [[o[min(k, len(o) - 1)] for o in options] for k in range(n)]


def _commands() -> list[tuple[str, str, tuple[str, ...]]]:
    """Every `python -m benchmarks.…` command of the README and the docs:
    (where, module, arguments)."""
    found = set()
    for path in [README, *PAGES]:
        for line in _command_lines(path.read_text()):
            for part in re.split(r"&&|;|\s\|\s", line):
                m = _COMMAND.search(part.strip())
                if m is None:
                    continue
                for args in _expand(shlex.split(m["args"], comments=True)):
                    found.add((path.name, m["module"], tuple(args)))
    return sorted(found)


def test_the_docs_give_commands():
    modules = {module for _, module, _ in _commands()}
    assert {"benchmarks.experiments.compare", "benchmarks.harness.train"} <= modules


class _Parsed(Exception):
    """Raised by the patched `ArgumentParser` once a command line is parsed."""


@contextlib.contextmanager
def _stop_after_parsing() -> Iterator[None]:
    """Makes a command stop with `_Parsed` once its arguments are parsed.

    `parse_args` stops at once (argparse has then refused any argument it
    does not accept). `parse_known_args` stops when nothing is left over;
    otherwise the command goes on to hand the rest to the command it forwards
    to, whose own parser then stops it.
    """
    original = argparse.ArgumentParser.parse_known_args
    depth = 0

    def parse(self, args, namespace):
        """The original parse and whether it was the outermost one."""
        nonlocal depth
        depth += 1
        try:
            return (*original(self, args, namespace), depth == 1)
        finally:
            depth -= 1

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras, outermost = parse(self, args, namespace)
        if outermost and not extras:
            raise _Parsed
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras, outermost = parse(self, args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        if outermost:
            raise _Parsed
        return namespace

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        yield


def _main_module(module: str) -> str:
    """The module `python -m module` runs: a package runs its `__main__`."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if spec.submodule_search_locations is not None:
        assert importlib.util.find_spec(f"{module}.__main__") is not None, (
            f"{module} is a package without __main__"
        )
        return f"{module}.__main__"
    return module


@pytest.mark.parametrize(
    "where, module, args",
    _commands(),
    ids=[f"{w}: {' '.join([m, *a])}" for w, m, a in _commands()],
)
def test_documented_command_parses(where, module, args, monkeypatch, capsys):
    main = _main_module(module)
    if main == module:
        source = pathlib.Path(importlib.util.find_spec(module).origin).read_text()
        assert "__main__" in source, (
            f"{module} has no `if __name__ == '__main__'` entry point"
        )
    if not args:
        return
    parse = getattr(importlib.import_module(module), "parse_args", None)
    try:
        if parse is not None:
            parse(list(args))  # with the command's own checks after argparse
        else:
            monkeypatch.setattr(sys, "argv", [module, *args])
            monkeypatch.delitem(sys.modules, main, raising=False)  # run afresh
            with _stop_after_parsing():
                runpy.run_module(main, run_name="__main__")
            pytest.fail(f"{module} ran to the end without parsing {args}")
    except _Parsed:
        pass
    except SystemExit as exit_:
        pytest.fail(
            f"{where}: `python -m {module} {shlex.join(args)}` is refused "
            f"(exit {exit_.code}): {capsys.readouterr().err.strip()}"
        )


def _package(module: str) -> str | None:
    """The package of the architecture page a module belongs to, or None."""
    parts = module.split(".")
    if parts[0] in ("sdr", "sdr_flax"):
        return parts[0]
    if parts[0] == "benchmarks" and len(parts) > 1:
        return parts[1]
    return None


def _imports() -> set[tuple[str, str]]:
    """(importer, imported) pairs of the architecture page's packages."""
    edges = set()
    for top in ("sdr", "sdr_flax", "benchmarks"):
        for path in (ROOT / top).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            source = _package(module)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for name in names:
                    target = _package(name)
                    if source and target and target != source:
                        edges.add((source, target))
    return edges


def test_architecture_page_shows_the_imports():
    text = (ROOT / "docs" / "architecture.md").read_text()
    (diagram,) = [body for info, body, _, _ in _blocks(text) if info == "mermaid"]
    shown = set(re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", diagram, re.M))
    assert shown == _imports()
