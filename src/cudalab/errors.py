"""Exit codes and the one exception type that turns a user mistake into a one-line message."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The process exit codes every ``cudalab`` command honours (DESIGN.md, Contracts)."""

    OK = 0
    #: the job ran and found a problem (the doctor finds the GPU unusable, a data check fails)
    PROBLEM = 1
    #: bad usage or bad input; a one-line message names the file and the fault
    USAGE = 2
    #: interrupted by the user (Ctrl-C), as shells report SIGINT
    INTERRUPTED = 130


class CudalabError(Exception):
    """A fault the user can fix: printed as one line, never as a traceback.

    Parameters
    ----------
    message
        What is wrong, naming the file or option at fault.
    code
        The exit code to leave with; bad input by default.
    """

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code
