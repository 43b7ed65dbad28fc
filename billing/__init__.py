"""canalflow billing: from stored readings to canal efficiency and village bills (docs/billing.md).

Modules, lowest stage first (docs/design.md, "Billing as stages"):

- ``tariff``      the tariff engine: bands, components, subsidy, reward, Decimal money
- ``allocation``  charging-point volumes -> billing-unit volumes, exact to the m3
- ``window``      season windows, the quota share of a window, the tariff in force, month cuts
- ``edits``       manual volume edits (the E of VEE)
- ``readings``    fetch point series (raw readings) or window sums (daily rollups) from InfluxDB
- ``hydrometry``  versioned ratings: re-rate raw levels with the version in force
- ``volumes``     point volumes from a volume source (readings or rollups), one protocol
- ``efficiency``  reach balances, canal/level/system/field/whole-district efficiency
- ``vee``         validation findings, balance estimates for long gaps; the VEE stage
- ``bills``       bills and billing runs from point volumes (pure)
- ``exports``, ``pdf`` run files: JSON, CSV, XLSX; PDF bills
- ``kpis``        billing KPI rows for the dashboards
- ``ledger``      SQL ledger: runs, bills, edits, audit trail; money as a journal of postings in fen
- ``run``         ``run_billing``: the stages in order
- ``explain``     trace a bill line back to volumes and readings
- ``api``         the FastAPI HTTP API; ``cli`` the ``canalflow billing`` commands
"""
