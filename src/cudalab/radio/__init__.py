"""GPU search for fast radio bursts and pulsar single pulses.

One folder per stage, one module per job:

- ``io/``: SIGPROC and PSRFITS headers and samples, one way in for both, the block stream;
- ``rfi``: interference mitigation (channel statistics, spectral kurtosis, zero-DM);
- ``dedispersion/``: the DM plan, the direct sum (the torch reference), the sub-band method;
- ``kernels/``: the Triton kernels and the choice between them and the torch references;
- ``single_pulse/``: baseline and boxcar search, clustering, DM refinement, candidates, cutouts;
- ``pipeline/``: the search as a job (config, memory model, search, its run folder);
- ``report``, ``simulate`` (synthetic observations with a truth table), ``evaluate`` (recovery
  against a truth table), ``constants`` (the dispersion constant), ``cli``.

Candidate classification and the periodicity search join as ``classify/`` and ``periodic/``.

Conventions (DESIGN.md): arrays are ``(chan, time)`` float32; times are referenced to the centre of
the highest-frequency channel; one dispersion constant, :data:`~cudalab.radio.constants.DM_CONSTANT`.
"""
