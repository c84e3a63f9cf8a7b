"""The installed distribution: its name, its version and the extras the docs name."""

import importlib.metadata
import pathlib
import re

import pytest

import sdr

DIST = "sdr-jax"
ROOT = pathlib.Path(__file__).resolve().parents[1]
# The extras of every `pip install ...` in the README and the quick start:
# `".[flax]"`, `"sdr-jax[flax]"`, `'.[dev,docs]'`.
PIP_INSTALL = re.compile(r"pip install\b[^\n]*")
EXTRAS = re.compile(r"""["'](?:\.|sdr-jax)\[([^\]]+)\]["']""")


def documented_extras(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    extras = set()
    for command in PIP_INSTALL.findall(text):
        for group in EXTRAS.findall(command):
            extras.update(name.strip() for name in group.split(","))
    return extras


@pytest.fixture(scope="module")
def metadata():
    try:
        return importlib.metadata.metadata(DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f'{DIST} is not installed: run `pip install -e ".[dev]"`')


def test_distribution_name_and_single_version(metadata):
    # Not "sdr", the software-defined-radio package that also imports as `sdr`.
    assert metadata["Name"] == DIST
    assert metadata["Version"] == sdr.__version__
    assert importlib.metadata.version(DIST) == sdr.__version__


def test_no_dependency_on_the_radio_package(metadata):
    # A self-reference left as `sdr[flax]` would pull in the radio package.
    names = {
        re.split(r"[\s\[;<>=!~(]", requirement, maxsplit=1)[0].lower()
        for requirement in metadata.get_all("Requires-Dist") or []
    }
    assert "sdr" not in names, sorted(names)


@pytest.mark.parametrize("path", ["README.md", "docs/quickstart.md"])
def test_documented_extras_exist(metadata, path):
    extras = documented_extras(path)
    assert extras, f"no `pip install` with extras found in {path}"
    provided = set(metadata.get_all("Provides-Extra") or [])
    assert extras <= provided, (path, sorted(extras - provided))


def test_readme_names_the_extras_it_must():
    # The README's two set-up commands and the GPU line.
    assert {"bench", "dev", "flax", "cuda"} <= documented_extras("README.md")
