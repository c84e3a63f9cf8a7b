r"""The paper's toy models (Sec. 2.2 and 3.1) and their training, in pure JAX.

- Model 1 (eq. 3): the linear two-layer circular convnet
  $X = k_2 \circledast k_1 \circledast Z$ on a prime grid, $Z$ a single Dirac
  whose location has probabilities $\pi$ (`model1`, `sample_dirac`).
- Example 1, the eye generator: $k_2$ an eye inside a $\delta\times\delta$
  square, $k_1$ two Diracs at a fixed horizontal distance (`eye_generator`,
  its SDR in closed form `eye_generator_sdr`). Stretching $k_1$ by
  $g \in \mathcal{S}_d$ extrapolates the eye distance (`stretch_extrapolate`,
  `extrapolation_error`).
- Model 2 (eq. 9): $X = \mathrm{diag}(a)\,\mathrm{diag}(b)\,Z$ (`model2`).
- Training dynamics: gradient descent, SGD and stale-gradient (asynchronous)
  SGD on $|C - ab|^2$ (`product_sgd`, Sec. 3.2), and SGD of Model 1 on the
  real and imaginary parts of the kernels' DFT coefficients, optionally
  interleaved with gradient steps on the penalty of eq. (13)
  (`fourier_sgd`, Sec. 3.3–3.4).

Every simulation is one `jax.lax.scan` over steps; batch seeds or settings
with `jax.vmap`. The 2-D grids are `(d', d)`: rows first, the stretched
(horizontal) axis last.

`import sdr` leaves this package out; `from sdr import toys` (or
`import sdr.toys`) loads it.
"""

from sdr.toys._dynamics import KernelPath, ProductPath, fourier_sgd, product_sgd
from sdr.toys._eye import (
    EYE_1D,
    EYE_2D,
    EyeGenerator,
    eye_generator,
    eye_generator_sdr,
)
from sdr.toys._models import (
    balanced_kernels,
    extrapolation_error,
    model1,
    model2,
    sample_dirac,
    stretch_extrapolate,
)

__all__ = [
    "EYE_1D",
    "EYE_2D",
    "EyeGenerator",
    "KernelPath",
    "ProductPath",
    "balanced_kernels",
    "extrapolation_error",
    "eye_generator",
    "eye_generator_sdr",
    "fourier_sgd",
    "model1",
    "model2",
    "product_sgd",
    "sample_dirac",
    "stretch_extrapolate",
]
