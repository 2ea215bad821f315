"""The pulsar search: Fourier search with harmonic sums, sifting, and folding (``cudalab radio periodic``)."""
