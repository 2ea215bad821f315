"""Dedispersion: the DM grid and time scrunching (``plan``), the direct sum (``direct``, the torch
reference every kernel is checked against) and the two-stage sub-band method (``subband``). The GPU
kernels live apart, in :mod:`cudalab.radio.kernels`."""
