"""The errors that describe bad input, in one light module.

The command line prints these as one clear message instead of a traceback. They live here, not in
the modules that raise them, so that the command line (imported by every stage) does not pull
the data, scoring and checkpoint code into every stage's dependencies (siren_bench/dvc_deps.py).
Each module that raises one re-exports it under its old name.
"""

from __future__ import annotations

import os


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class AudioFileError(ValueError):
    """An audio file that cannot be used as it is; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(ValueError):
    """A missing, corrupt, mismatched or unexpected checkpoint; the message names the file."""


class AudioCapsError(ValueError):
    """A problem with the user's AudioCaps list or folder; lists every offending file."""


class ManifestError(ValueError):
    """A manifest that cannot be trusted; the message names the file and the row."""


class RankMismatchError(ValueError):
    """torchrun ranks that were given different inputs (e.g. another clip list) for one job."""


class ClipSetError(ValueError):
    """A clip set that cannot be scored as given; the message names the folder, file or ids."""


class AuditError(ValueError):
    """A results file that `siren-bench audit` cannot use; the message names the file and what is wrong."""


# Printed by the command line as `siren-bench <command>: error: <message>`, exit status 2.
USER_ERRORS = (ConfigError, AudioCapsError, ManifestError, AudioFileError, CheckpointError, ClipSetError, AuditError,
               RankMismatchError, FileNotFoundError, NotADirectoryError)
