"""Runs: what every job that produces results leaves behind, and how to find and compare them.

``config`` (typed configs, TOML, ``--set`` overrides, identity), ``rundir`` (the run directory, its
manifest and metrics log, resume choice, atomic publication) and ``cli`` (``cudalab runs`` and the
config options every job command shares). No torch here: listing runs is instant anywhere.
Dependency order: ``env -> runs -> train -> workloads -> cli``.
"""
