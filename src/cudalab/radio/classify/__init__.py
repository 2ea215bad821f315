"""Candidate classification: a CNN that tells real bursts from RFI and noise.

- :mod:`~cudalab.radio.classify.data`: FETCH h5 cutouts (ours and ``your_candmaker``'s) as the
  networks' input, two planes of ``size x size``;
- :mod:`~cudalab.radio.classify.dataset`: training sets made by the simulator and the search itself,
  labelled by truth matching (``cudalab radio dataset``);
- :mod:`~cudalab.radio.classify.augment`: on-the-fly augmentations;
- :mod:`~cudalab.radio.classify.models`, :mod:`~cudalab.radio.classify.losses`: the networks and the
  losses for imbalanced classes;
- :mod:`~cudalab.radio.classify.task`: training through the engine (``cudalab train radio-classifier``);
- :mod:`~cudalab.radio.classify.score`: the shipped weights, scoring in batches, export with a model card.
"""
