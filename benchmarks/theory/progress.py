"""The stage display of the theory run: a tqdm bar, or stage lines without it."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class Progress:
    """Stage display: a tqdm bar when available, else stage lines; timings kept.

    Attributes:
      times: the seconds each finished stage took, by name.
    """

    def __init__(self, names: list[str]) -> None:
        """Opens the display.

        Args:
          names: the stages, in order (their number sizes the bar).
        """
        self.times: dict[str, float] = {}
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=len(names), unit="stage", file=sys.stderr)
            self.write = tqdm.write
        except ImportError:  # pragma: no cover - tqdm is a bench dependency
            self.bar = None
            self.write = print

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Times the enclosed block as stage `name` and prints its time.

        Args:
          name: the stage's name, shown while it runs and kept in `times`.

        Yields:
          None, once the stage has started.
        """
        if self.bar is not None:
            self.bar.set_description(name)
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start
        self.write(f"  {name}: {self.times[name]:.1f} s")
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        """Closes the bar (nothing to do without tqdm)."""
        if self.bar is not None:
            self.bar.close()
