"""The one error and exit-code table of raw2ready (see README "Errors and exit codes").

| class                 | exit | retried?                          | meaning                                  |
|-----------------------|------|-----------------------------------|------------------------------------------|
| (success)             | 0    | —                                 | done, or ``skipped`` (nothing to do)     |
| ``Raw2ReadyError``    | 1    | no                                | anything unexpected                      |
| ``UsageError``        | 2    | no                                | bad command-line arguments               |
| ``InvalidInputError`` | 3    | never; dead-lettered with reason  | bad input: unreadable band, missing asset|
| ``TransientError``    | 75   | yes, with backoff (EX_TEMPFAIL)   | S3/HTTP timeouts, throttling, broker loss|
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INVALID_INPUT = 3
EXIT_TRANSIENT = 75  # sysexits.h EX_TEMPFAIL; Argo's retryStrategy retries only this code


class Raw2ReadyError(Exception):
    """Base class; an unexpected failure (exit 1)."""

    exit_code = EXIT_FAILURE
    retryable = False


class UsageError(Raw2ReadyError):
    """Bad arguments on the command line (exit 2)."""

    exit_code = EXIT_USAGE


class InvalidInputError(Raw2ReadyError):
    """The input itself is bad; retrying cannot help (exit 3, dead-lettered)."""

    exit_code = EXIT_INVALID_INPUT


class TransientError(Raw2ReadyError):
    """A failure that may succeed on retry: timeouts, throttling, lost connections (exit 75)."""

    exit_code = EXIT_TRANSIENT
    retryable = True


def exit_code_for(exc: BaseException) -> int:
    """Map any exception to the documented exit code."""
    if isinstance(exc, Raw2ReadyError):
        return exc.exit_code
    return EXIT_FAILURE
