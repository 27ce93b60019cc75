"""Write Ardour sessions from generated clips: one track per clip, resampled, placed, tagged, verified."""

from .errors import (
    ArdourExportError,
    ArdourToolError,
    AudioInputError,
    InvalidArgumentError,
    InvalidNameError,
    SessionExistsError,
    SessionWriteError,
    UnsafePathError,
)
from .export import export_session
from .models import Clip, MarkerInfo, SessionManifest, TrackInfo

__all__ = [
    "ArdourExportError",
    "ArdourToolError",
    "AudioInputError",
    "Clip",
    "InvalidArgumentError",
    "InvalidNameError",
    "MarkerInfo",
    "SessionExistsError",
    "SessionManifest",
    "SessionWriteError",
    "TrackInfo",
    "UnsafePathError",
    "export_session",
]
