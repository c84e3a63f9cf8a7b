"""The networks the harness trains: the β-VAE, the DCGAN and a VQGAN-style decoder.

`ARCHITECTURES` lists the trainable ones by `--model` name, each an
`Architecture` (`benchmarks.nets.architecture`); `get` looks one up.
"""

from benchmarks.nets import dcgan, vae
from benchmarks.nets.architecture import LEVEL_NAMES, Architecture

__all__ = ["ARCHITECTURES", "LEVEL_NAMES", "Architecture", "get"]

ARCHITECTURES: dict[str, Architecture] = {
    "vae": vae.ARCHITECTURE,
    "dcgan": dcgan.ARCHITECTURE,
}


def get(name: str) -> Architecture:
    """The architecture of a `--model` name.

    Args:
      name: a key of `ARCHITECTURES` (`vae`, `dcgan`).

    Returns:
      The architecture.

    Raises:
      ValueError: for another name; the message lists the known ones.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; the known ones are {list(ARCHITECTURES)}"
        ) from None
