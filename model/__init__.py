"""diplotone's model: load a version, score (``Predictor``), explain and compare (``Scorer``) diplomatic messages.

Knows nothing of FastAPI, SQLAlchemy or the Trainer (see docs/design.md, "Three parts, one import direction").
"""

from model.bands import BAND_NAMES, BANDS, band_of
from model.errors import ArtifactCorrupt, DiplotoneError, EmptyInput, InputTooLong, UnknownVersion
from model.markers import MARKER_KINDS, Marker, find_markers
from model.predictor import Predictor
from model.registry import Registry
from model.results import Comparison, ScoreResult
from model.scorer import Scorer

__all__ = [
    "BANDS",
    "BAND_NAMES",
    "MARKER_KINDS",
    "ArtifactCorrupt",
    "Comparison",
    "DiplotoneError",
    "EmptyInput",
    "InputTooLong",
    "Marker",
    "Predictor",
    "Registry",
    "ScoreResult",
    "Scorer",
    "UnknownVersion",
    "band_of",
    "find_markers",
]
