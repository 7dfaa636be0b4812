"""The five bands of the 0-100 effusiveness scale (half-open, the top one closed)."""

from __future__ import annotations

BANDS: tuple[tuple[str, float, float], ...] = (
    ("cold", 0.0, 20.0),
    ("formal", 20.0, 40.0),
    ("cordial", 40.0, 60.0),
    ("warm", 60.0, 80.0),
    ("effusive", 80.0, 100.0),
)
BAND_NAMES: tuple[str, ...] = tuple(name for name, _, _ in BANDS)


def band_of(score: float) -> str:
    """Name the band a score falls in.

    >>> band_of(20.0), band_of(100.0)
    ('formal', 'effusive')
    """
    if not 0.0 <= score <= 100.0:
        raise ValueError(f"score must lie in [0, 100]; found {score}")
    for name, low, high in BANDS:
        if low <= score < high:
            return name
    return BANDS[-1][0]
