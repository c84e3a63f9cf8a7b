"""NumPy references written straight from the definitions (float64)."""

import numpy as np


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
