"""Errors raised by geoseg.

Every error is a :class:`GeosegError`; leaves also inherit the matching builtin so
callers that catch ``ValueError`` or ``FileNotFoundError`` keep working. Messages
say what was wrong, with which file, and what to do about it. The CLI turns any
``GeosegError`` into a one-line message and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "AllNodataError",
    "BandMismatchError",
    "CheckpointError",
    "ConfigError",
    "DateOrderError",
    "DiskFullError",
    "EncoderWeightsError",
    "GeosegError",
    "GsdMismatchError",
    "InputNotFoundError",
    "InvalidRasterError",
    "InvalidVectorError",
    "OutputExistsError",
    "OutputLockedError",
    "OutputNotWritableError",
    "UnknownFileError",
    "UnknownModelError",
    "UnsupportedCRSError",
]


class GeosegError(Exception):
    """Root of all errors geoseg raises on purpose."""


class InputNotFoundError(GeosegError, FileNotFoundError):
    """An input file does not exist."""


class InvalidRasterError(GeosegError, ValueError):
    """A raster cannot be used: not a raster, no CRS, rotated, empty, all nodata, ..."""


class AllNodataError(InvalidRasterError):
    """A result would hold no valid pixel: every pixel of its input is nodata."""


class InvalidVectorError(GeosegError, ValueError):
    """A vector layer cannot be used: not a layer, no usable CRS, coordinates that contradict it."""


class UnknownFileError(GeosegError, ValueError):
    """A file is none of the kinds geoseg reads (raster, vector layer, checkpoint)."""


class BandMismatchError(GeosegError, ValueError):
    """The scene's bands are not the ones the model expects."""


class CheckpointError(GeosegError, ValueError):
    """A model file is not a geoseg checkpoint, or is damaged."""


class ConfigError(GeosegError, ValueError):
    """A workflow, training config or class file is not valid (YAML, keys, types, values)."""


class EncoderWeightsError(GeosegError, ValueError):
    """Weights given to start an encoder do not fit it (architecture, keys, bands)."""


class GsdMismatchError(GeosegError, ValueError):
    """A scene's pixel size is far from the one the model was trained at."""


class UnknownModelError(GeosegError, KeyError):
    """A model or architecture name is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OutputExistsError(GeosegError, FileExistsError):
    """An output exists and ``overwrite`` was not given."""


class OutputNotWritableError(GeosegError, PermissionError):
    """An output folder cannot be written (no permission, read-only disk)."""


class OutputLockedError(GeosegError, FileExistsError):
    """Another run holds the lock of an output."""


class DateOrderError(GeosegError, ValueError):
    """Dated inputs (scenes, label maps) are not listed oldest first."""


class DiskFullError(GeosegError, OSError):
    """Writing an output ran out of disk space."""


class UnsupportedCRSError(GeosegError, ValueError):
    """Ground areas cannot be measured in a CRS (unknown unit of a local grid, another planet)."""
