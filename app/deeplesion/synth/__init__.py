"""CT-realistic synthetic DeepLesion data: analytic 3-D phantom, ellipsoid lesions, real file layout."""

from app.deeplesion.synth.generator import SynthSummary, generate_dataset
from app.deeplesion.synth.metadata import generate_metadata_only

__all__ = ["SynthSummary", "generate_dataset", "generate_metadata_only"]
