"""``python -m cudalab`` is the ``cudalab`` command."""

from cudalab.cli import run

run()
