"""Errors a user can act on.

Everything raised from here carries a message meant to be read by a person: what is wrong, where
(file, row, field) and what to do. The command line prints the message alone, without a traceback.
"""

from __future__ import annotations


class StudyError(Exception):
    """Base class for problems a user can fix (bad params, missing data, malformed files)."""


class ConfigError(StudyError):
    """A params file (or a --set override) does not describe a valid run."""


class DataError(StudyError):
    """A data file is missing or malformed."""


class BackendError(StudyError):
    """A model backend (local model or API server) could not answer."""
