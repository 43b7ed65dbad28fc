"""canalflow edge: the agent that polls a gateway's meters and never loses a reading, and the
field technician's tools (``canalflow edge ...``, ``python -m edge ...``; docs/edge.md).

Public API: :class:`edge.agent.EdgeAgent`, :func:`edge.config.edge_config_from_district`,
:func:`edge.config.load_edge_config`, :class:`edge.modbus.ModbusLink`, :class:`edge.buffer.Buffer`.
Simulated meters for the edge's tests are in the test bed (:mod:`testbed.simdevice`).
"""
