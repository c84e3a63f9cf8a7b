"""Readable names for pytree key paths, as `ConvTap.param_path` gives them."""

from __future__ import annotations

import jax


def key_names(path) -> list[str]:
    """The key of each step of a pytree key path, as strings.

    `"/".join(key_names(path))` is a leaf's full path, collections and
    wrappers included (`"params/decoder/deconv1/kernel"`); `path_name` is the
    shorter name captures give it.

    Args:
      path: a key path from `jax.tree_util.tree_flatten_with_path`.

    Returns:
      One string per key (dict keys, attribute names, sequence indices).
    """
    keys = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            keys.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            keys.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            keys.append(str(k.idx))
        else:
            keys.append(str(k))
    return keys


def path_name(path, *, skip: int = 0) -> str | None:
    """A readable `/`-joined name for a pytree key path.

    The name `ConvTap.param_path` gives a kernel that is an input leaf, and
    the one `sdr_flax.flip_input_channels` and `sdr_flax.spectral_independence`
    look parameters up by: the keys of `key_names`, with Flax's leading
    `params` collection (or the `kwargs` of keyword arguments) and NNX's
    trailing `value` dropped.

    Args:
      path: a key path from `jax.tree_util.tree_flatten_with_path`.
      skip: leading keys to drop first.

    Returns:
      The name (`"decoder/deconv1/kernel"`), or None for an empty path.
    """
    keys = key_names(path)[skip:]
    if keys and keys[0] in ("params", "kwargs"):
        keys = keys[1:]
    if keys and keys[-1] == "value":
        keys = keys[:-1]
    return "/".join(keys) or None
