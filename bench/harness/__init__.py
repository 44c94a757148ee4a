"""The benchmark harness: statistics, processes, load, databases, profiles and reports.

Scenarios (`bench.scenarios`) are built from these modules; nothing here knows a scenario.
"""
