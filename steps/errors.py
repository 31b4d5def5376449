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

import math
import random

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


def backoff_delay(attempt: int, first: float, cap: float = math.inf, *, jitter: bool = False,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``min(cap, first·2^(attempt-1))`` — the one back-off
    formula of raw2ready; each caller keeps its behaviour through the arguments:

    * ``steps.pipeline.runner.call_with_retries`` (a step's ``TransientError``): ``RETRY_BACKOFF_S·2ⁿ``, no cap,
      no jitter;
    * ``steps.queue.bookkeeping.retry_expiration_ms`` (the ``expiration`` of a copy in the retry queue): the same
      delays in milliseconds;
    * ``steps.queue.transport.Reconnect`` (a lost broker connection): 1 s doubling to a 30 s cap, with jitter.

    With ``jitter`` the delay is drawn uniformly in the upper half of its step ("equal jitter": between d/2 and
    d), so that many clients that failed together (workers that lost one broker) do not retry in lock-step;
    ``rng`` makes the draw reproducible.
    """
    d = min(cap, first * 2 ** max(0, attempt - 1))
    if not jitter:
        return d
    return d / 2 + (rng or random).uniform(0, d / 2)
