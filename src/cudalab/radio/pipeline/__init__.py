"""The single-pulse search as a job: its config (``config``), its memory model and block geometry
(``memory``), the search itself (``search``: file to candidates, writing nothing) and the run folder
it leaves (``outputs``)."""
