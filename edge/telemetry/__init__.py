"""Telemetry stations that dial in: SL 651-2014 (hydrological RTUs) and SZY 206 / SL/T 427 terminals.

``sl651``, ``sl651_ascii`` and ``szy206`` are pure decoders and encoders (bytes in, frames out, no
I/O); every reject raises :class:`FrameError` with a machine-readable ``reason``. ``stations`` maps
a decoded frame to wire quantities per the district file; ``receiver`` is the telemetry centre (an
``EdgeAgent`` whose south side is a TCP server); ``simstation`` simulates stations; ``explain`` and
``cli`` are ``canalflow edge decode|receive|stations|simstations``. See docs/stations.md.
"""

from edge.telemetry.errors import FrameError

__all__ = ["FrameError"]
