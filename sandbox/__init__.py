"""The local data platform for the demo, the tests and the benchmarks.

Plain Python (no Django): :mod:`sandbox.services` starts and stops real PostgreSQL and Redis servers on
loopback; :mod:`sandbox.weather` loads the seed-004 weather warehouse (raw, core, mart) into a database.
"""
