"""Reading (and writing) radio data: SIGPROC and PSRFITS headers and samples, one way in for both
(:func:`~cudalab.radio.io.observation.open_observation`), and the block stream that moves them to
the compute device while the previous block computes (:mod:`~cudalab.radio.io.stream`)."""
