"""The `layers=` argument: names or a predicate, checked against what exists."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# `#2` (a repeated layer), `[3]` (a scan iteration), `[last]` (a while loop).
_SUFFIX = re.compile(r"(#\d+|\[(\d+|last)\])+$")


def base_name(name: str) -> str:
    """A tap's name without its repeat and iteration suffixes."""
    return _SUFFIX.sub("", name)


class Layers:
    """A validated `layers=` argument.

    `None` selects every layer; a callable is a predicate on names; any
    other iterable (a list, a set, a generator) is a collection of names,
    read once. A name selects the layer of that name and, when it has no
    suffix, every repeat and iteration of it (`"blocks/conv"` selects
    `"blocks/conv[0]"`, `"blocks/conv[1]"`…).
    """

    def __init__(self, layers: Iterable[str] | Callable[[str], bool] | None):
        self.names: frozenset[str] | None = None
        self.predicate: Callable[[str], bool] | None = None
        if layers is None:
            return
        if isinstance(layers, str):
            raise TypeError(
                f"`layers` must be a collection of layer names or a predicate, "
                f"not a string; got {layers!r}. Did you mean layers=[{layers!r}]?"
            )
        if callable(layers):
            self.predicate = layers
            return
        try:
            names = list(layers)
        except TypeError:
            raise TypeError(
                "`layers` must be None, a collection of layer names or a "
                f"predicate on names; got {type(layers).__name__}."
            ) from None
        wrong = [n for n in names if not isinstance(n, str)]
        if wrong:
            raise TypeError(
                f"`layers` must hold layer names (strings); got {wrong[:3]!r}."
            )
        self.names = frozenset(names)

    def __call__(self, name: str) -> bool:
        if self.predicate is not None:
            return bool(self.predicate(name))
        if self.names is None:
            return True
        return name in self.names or base_name(name) in self.names

    def check_known(self, known: Iterable[str], where: str) -> None:
        """Raises `ValueError` for names that match none of `known`."""
        if self.names is None:
            return
        known = list(known)
        matched = set(known) | {base_name(k) for k in known}
        unknown = sorted(self.names - matched)
        if unknown:
            raise ValueError(
                f"`layers` names {unknown} match no layer of {where}; the known "
                f"layers are {known}."
            )
