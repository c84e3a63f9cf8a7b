"""Shared by the tests: NumPy references written straight from the
definitions (float64), test data, and checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import sdr_flax
from sdr import capture_convs

NHWC = ("NHWC", "HWIO", "NHWC")
NCHW = ("NCHW", "OIHW", "NCHW")


def nonzero_mean(p, include_dc=False, excluded=None):
    """The mean of `p` over its frequencies: those where the boolean mask
    `excluded` is set are left out, and the zero one is in iff `include_dc`."""
    p = np.asarray(p, np.float64)
    averaged = np.ones(p.shape, bool) if excluded is None else ~np.asarray(excluded)
    averaged.flat[0] = include_dc
    return p[averaged].mean()


def zero_aliases(grid, strides):
    """The frequencies of `grid` where maps dilated by `strides` (zeros
    inserted) have their mean: the multiples of grid / strides, per axis,
    zero included."""
    mask = np.zeros(grid, bool)
    mask[
        tuple(slice(None, None, g // s) for g, s in zip(grid, strides, strict=True))
    ] = True
    return mask


def sdr(x, kernel, include_dc=False, excluded=None):
    """Eq. (8) by FFT: x (n, *spatial), kernel zero-padded at the origin; the
    means over the frequencies of `nonzero_mean`."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(1, x.ndim))
    s = np.mean(np.abs(np.fft.fftn(x, axes=axes)) ** 2, axis=0)
    kernel = np.asarray(kernel, np.float64)
    k2 = np.abs(np.fft.fftn(kernel, s=x.shape[1:], axes=range(kernel.ndim))) ** 2
    m = lambda p: nonzero_mean(p, include_dc, excluded)  # noqa: E731
    return m(s * k2) / (m(s) * m(k2))


def dilate(a, factors, axes):
    """Inserts zeros: a[..., h, ...] lands at index factor·h on each axis."""
    shape = list(a.shape)
    for f, ax in zip(factors, axes, strict=True):
        shape[ax] = (shape[ax] - 1) * f + 1 if f > 1 else shape[ax]
    out = np.zeros(shape, a.dtype)
    index = [slice(None)] * a.ndim
    for f, ax in zip(factors, axes, strict=True):
        index[ax] = slice(None, None, f)
    out[tuple(index)] = a
    return out


def conv_sdr_loop(
    maps,
    kernel,
    strides=1,
    transpose=False,
    dilation=1,
    groups=1,
    include_dc=False,
    include_aliases=True,
):
    """The pair matrix by a Python loop over pairs of `sdr` on explicit grids
    (the maps of a transposed conv dilated by the strides, full FFTs; without
    `include_aliases`, the aliases of zero masked)."""
    maps = np.asarray(maps, np.float64)
    kernel = np.asarray(kernel, np.float64)
    rank = maps.ndim - 2
    strides = (strides,) * rank if isinstance(strides, int) else tuple(strides)
    dilation = (dilation,) * rank if isinstance(dilation, int) else tuple(dilation)
    excluded = None
    if transpose:
        grid = tuple(h * s for h, s in zip(maps.shape[1:-1], strides, strict=True))
        big = np.zeros((maps.shape[0], *grid, maps.shape[-1]))
        big[(slice(None), *[slice(None, None, s) for s in strides])] = maps
        maps = big
        if not include_aliases:
            excluded = zero_aliases(grid, strides)
    kernel = dilate(kernel, dilation, tuple(range(rank)))
    cg, c_out = kernel.shape[-2:]
    cog = c_out // groups
    out = np.zeros((cg, c_out))
    for i in range(cg):
        for j in range(c_out):
            channel = (j // cog) * cg + i
            out[i, j] = sdr(maps[..., channel], kernel[..., i, j], include_dc, excluded)
    return out


def count_conv_traces(monkeypatch):
    """A list that gets the geometry of every trace of the implementation of
    `sdr.conv_sdr`, `conv_pair_gaps` and `conv_penalty` from now on (their
    inputs are prepared once per trace, never when a compiled program is
    reused). `monkeypatch` is pytest's fixture, which undoes the patch."""
    from sdr import _conv

    traces = []
    prepare = _conv._prepare

    def counted(*args, **kwargs):
        traces.append(kwargs["layer"])
        return prepare(*args, **kwargs)

    monkeypatch.setattr(_conv, "_prepare", counted)
    return traces


def assert_png_image(path, min_side=50):
    """`path` is a PNG that decodes to an RGB(A) image of at least `min_side`
    pixels a side with something drawn on it: at least 1 % of its pixels
    differ from its most common colour (the background) by more than one
    8-bit grey level."""
    import pathlib

    from matplotlib.image import imread

    path = pathlib.Path(path)
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[-1] in (3, 4), (path, pixels.shape)
    assert min(pixels.shape[:2]) >= min_side, (path, pixels.shape)
    rgb = pixels[..., :3].reshape(-1, 3)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    drawn = np.mean(np.max(np.abs(rgb - background), axis=1) > 1.5 / 255)
    assert drawn > 0.01, f"{path} is blank: {drawn:.2%} of its pixels drawn"


def draw_maps(seed, shape):
    """Coloured maps with a mean per channel, so the zero frequency weighs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    x = x + 0.8 * np.roll(x, 1, axis=1) + 0.5 * np.roll(x, 1, axis=2)
    x = x + rng.uniform(0.5, 1.5, size=shape[-1])
    return x.astype(np.float32)


def draw_kernel(seed, shape):
    rng = np.random.default_rng(1000 + seed)
    return (0.5 * rng.normal(size=shape)).astype(np.float32)


@functools.partial(
    jax.jit,
    static_argnames=(
        "fn",
        "learning_rate",
        "include_dc",
        "scale_free",
        "include_aliases",
    ),
)
def penalty_update(
    params, x, *, fn, learning_rate, include_dc, scale_free, include_aliases=True
):
    """The transform's update of `params` for a zero main update."""
    _, taps = capture_convs(fn, params, x)
    spectra = sdr_flax.layer_spectra(taps)
    tx = sdr_flax.spectral_independence(
        learning_rate,
        include_dc=include_dc,
        scale_free=scale_free,
        include_aliases=include_aliases,
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params, spectra=spectra)
    return updates
