"""Reading clips and bringing them to the session rate: Ardour plays files as they are, it never resamples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioInputError


@dataclass(frozen=True)
class StoredClip:
    """What the session needs to know about a clip once its audio is on disk at the session rate."""

    channels: int
    frames: int
    source_rate: int


def store_at_rate(source: Path, dest: Path, rate: int) -> StoredClip:
    """Copy a mono or stereo file to `dest` as a float WAV at `rate`, resampling with soxr's HQ filter.

    Float keeps the resampler's overshoot above 0 dBFS unclipped and matches the session's
    native-file-data-format. Only one clip's samples are held in memory at a time.
    """
    try:
        data, source_rate = sf.read(str(source), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, OSError) as exc:
        raise AudioInputError(
            f"clip file {str(source)!r} cannot be read as audio ({exc}); pass a WAV/FLAC/OGG file that exists"
        ) from exc
    if data.shape[1] not in (1, 2):
        raise AudioInputError(
            f"clip file {str(source)!r} has {data.shape[1]} channels; one track holds mono or stereo only, "
            "so mix it down to 1 or 2 channels first"
        )
    if data.shape[0] == 0:
        raise AudioInputError(f"clip file {str(source)!r} holds no samples; pass a non-empty audio file")
    if not np.isfinite(data).all():
        raise AudioInputError(f"clip file {str(source)!r} contains NaN or infinite samples; regenerate it")
    if source_rate != rate:
        data = soxr.resample(data, source_rate, rate, quality="HQ")
    sf.write(str(dest), np.ascontiguousarray(data, dtype=np.float32), rate, subtype="FLOAT", format="WAV")
    return StoredClip(channels=int(data.shape[1]), frames=int(data.shape[0]), source_rate=int(source_rate))
