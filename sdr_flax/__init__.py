"""sdr_flax: the SDR of every conv layer of a Flax or JAX generator.

Builds on the pure-JAX core `sdr`.
"""

from sdr_flax._layers import LayerSummary as LayerSummary
from sdr_flax._layers import capture_layers as capture_layers
from sdr_flax._layers import format_table as format_table
from sdr_flax._layers import layer_sdr as layer_sdr
from sdr_flax._layers import summarize as summarize

__all__ = [
    "LayerSummary",
    "capture_layers",
    "format_table",
    "layer_sdr",
    "summarize",
]
