"""The single-pulse stage: baseline, noise and boxcar search of dedispersed series (``search``),
friends-of-friends clustering (``cluster``), DM refinement (``refine``), candidate files
(``candidates``: CSV and heimdall's .cand) and FETCH cutouts (``cutouts``)."""
