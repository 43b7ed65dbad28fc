"""The test bed: what tests, ``canalflow demo`` and the benchmarks run the product with.

- :mod:`testbed.services` starts real Mosquitto, InfluxDB and PostgreSQL servers on free loopback
  ports in private directories;
- :mod:`testbed.pipeline` runs fleet, edge agents and ingest as separate processes, as deployed;
- :mod:`testbed.demo` (``canalflow demo``) and :mod:`testbed.report`, its report against the
  simulator's ground truth;
- :mod:`testbed.simdevice`, simulated Modbus meters for the edge's bus tests;
- :mod:`testbed.loadgen`, a publisher process for ingest tests and benchmarks.

The product (``canalflow``, ``edge``, ``ingest``, ``billing``, ``dashboards``, ``firmware_sim``)
never imports it (tests/test_layering.py), so a gateway install need not carry test servers.
"""
