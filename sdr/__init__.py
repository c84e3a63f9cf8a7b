"""sdr: measure and enforce independence of mechanisms in convolutional generators.

Implements the Spectral Density Ratio and the genericity machinery of
Besserve et al., "A Theory of Independent Mechanisms for Extrapolation in
Generative Models" (AAAI 2021).
"""

from sdr._conv import conv_pair_gaps as conv_pair_gaps
from sdr._conv import conv_penalty as conv_penalty
from sdr._conv import conv_sdr as conv_sdr
from sdr._geometry import ConvGeometry as ConvGeometry
from sdr._paths import key_names as key_names
from sdr._paths import path_name as path_name
from sdr._ratio import power_contrast as power_contrast
from sdr._ratio import spectral_density_ratio as spectral_density_ratio
from sdr._ratio import spectral_independence_penalty as spectral_independence_penalty
from sdr._ratio import trace_ratio as trace_ratio
from sdr._spectra import cause_spectrum as cause_spectrum
from sdr._spectra import channel_spectra as channel_spectra
from sdr._spectra import circular_convolve as circular_convolve
from sdr._spectra import kernel_spectrum as kernel_spectrum
from sdr._spectra import nonzero_mean as nonzero_mean
from sdr._stretch import generic_ratio as generic_ratio
from sdr._stretch import group_inverse as group_inverse
from sdr._stretch import stretch as stretch
from sdr._stretch import stretch_fourier as stretch_fourier
from sdr._stretch import stretch_group as stretch_group
from sdr._taps import ConvTap as ConvTap
from sdr._taps import capture_convs as capture_convs
from sdr._taps import edit_convs as edit_convs

__version__ = "0.1.0"

__all__ = [
    "ConvGeometry",
    "ConvTap",
    "capture_convs",
    "cause_spectrum",
    "channel_spectra",
    "circular_convolve",
    "conv_pair_gaps",
    "conv_penalty",
    "conv_sdr",
    "edit_convs",
    "generic_ratio",
    "group_inverse",
    "kernel_spectrum",
    "key_names",
    "nonzero_mean",
    "path_name",
    "power_contrast",
    "spectral_density_ratio",
    "spectral_independence_penalty",
    "stretch",
    "stretch_fourier",
    "stretch_group",
    "trace_ratio",
]
