"""sdr_flax: the SDR of every conv layer of a Flax or JAX generator, and the
spectral independence penalty for training (an Optax transform or a loss term),
and interventions on hidden layers.

Builds on the pure-JAX core `sdr`.
"""

from sdr_flax._edits import flip_input_channels as flip_input_channels
from sdr_flax._edits import permute_outputs as permute_outputs
from sdr_flax._interventions import intervene as intervene
from sdr_flax._interventions import stretch_maps as stretch_maps
from sdr_flax._layer_spectra import LayerSpectra as LayerSpectra
from sdr_flax._layer_spectra import layer_spectra as layer_spectra
from sdr_flax._layer_spectra import penalty as penalty
from sdr_flax._layers import GENERIC_BAND as GENERIC_BAND
from sdr_flax._layers import LayerSummary as LayerSummary
from sdr_flax._layers import capture_layers as capture_layers
from sdr_flax._layers import format_table as format_table
from sdr_flax._layers import layer_sdr as layer_sdr
from sdr_flax._layers import layer_stats as layer_stats
from sdr_flax._layers import summarize as summarize
from sdr_flax._modules import Modules as Modules
from sdr_flax._modules import channel_influence as channel_influence
from sdr_flax._modules import channel_modules as channel_modules
from sdr_flax._report import plot_layer_sdr as plot_layer_sdr
from sdr_flax._transform import SpectralIndependenceState as SpectralIndependenceState
from sdr_flax._transform import spectral_independence as spectral_independence
from sdr_flax._transform import with_spectral_independence as with_spectral_independence

__all__ = [
    "GENERIC_BAND",
    "LayerSpectra",
    "LayerSummary",
    "Modules",
    "SpectralIndependenceState",
    "capture_layers",
    "channel_influence",
    "channel_modules",
    "flip_input_channels",
    "format_table",
    "intervene",
    "layer_sdr",
    "layer_spectra",
    "layer_stats",
    "penalty",
    "permute_outputs",
    "plot_layer_sdr",
    "spectral_independence",
    "stretch_maps",
    "summarize",
    "with_spectral_independence",
]
