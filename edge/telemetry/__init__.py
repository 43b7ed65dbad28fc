"""Telemetry stations that dial in: SL 651-2014 (hydrological RTUs) and SZY 206 / SL/T 427 terminals.

``sl651`` and ``szy206`` are pure decoders and encoders (bytes in, frames out, no I/O); every
reject raises :class:`FrameError` with a machine-readable ``reason``. ``explain`` turns a decoded
frame into the field-by-field view of ``canalflow edge decode``. See docs/stations.md.
"""

from edge.telemetry.errors import FrameError

__all__ = ["FrameError"]
