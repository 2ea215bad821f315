"""GPU search for fast radio bursts and pulsar single pulses.

One module per stage: ``sigproc`` / ``psrfits`` / ``observation`` (read and write data),
``constants`` and ``plan`` (the DM grid and time scrunching), ``simulate`` (synthetic observations with
a truth table), ``rfi`` (interference mitigation), ``dedisperse``, ``search`` (baseline, boxcar,
clustering), ``candidates`` (CSV and heimdall ``.cand``), ``cutouts`` (FETCH HDF5), ``report`` (HTML
with plots), and ``pipeline`` which strings them together.

Conventions (DESIGN.md): arrays are ``(chan, time)`` float32; times are referenced to the centre of
the highest-frequency channel; one dispersion constant, :data:`~cudalab.radio.constants.DM_CONSTANT`.
"""
