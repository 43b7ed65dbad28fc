"""canalflow billing: from stored readings to canal efficiency and village bills (docs/billing.md).

Modules:

- ``readings``    fetch point series (raw readings) or window sums (daily rollups) from InfluxDB
- ``hydrometry``  versioned ratings: re-rate raw levels with the version in force
- ``vee``         validation findings, balance estimates for long gaps, manual edits
- ``allocation``  charging-point volumes -> billing-unit volumes, exact to the m3
- ``tariff``      the tariff engine: bands, components, subsidy, reward, Decimal money
- ``run``         billing runs (``run_billing``), bills, files, KPIs
- ``ledger``      SQL ledger: runs, bills, edits, audit trail; money as a journal of postings in fen
- ``efficiency``  reach balances, canal/level/system/field/whole-district efficiency
- ``explain``     trace a bill line back to volumes and readings
- ``pdf``, ``xlsx`` bill documents and run summaries
- ``api``         the FastAPI HTTP API; ``cli`` the ``canalflow billing`` commands
"""
