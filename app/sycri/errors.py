"""Typed domain errors, each bound to the one gRPC status code it maps to.

Domain code raises these; the RPC wrapper in ``sycri.cri.service`` turns them into a
gRPC status. Nothing else in sycri chooses status codes, so the mapping lives here once.
"""

from __future__ import annotations

import grpc

_EXCERPT = 64


def excerpt(value: object, limit: int = _EXCERPT) -> str:
    """A short, escaped rendering of untrusted input, safe to quote in an error message."""
    text = value if isinstance(value, str) else repr(value)
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return repr(shown) if len(text) <= limit else repr(shown) + "..."


class SycriError(Exception):
    """Base of every error sycri reports to a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(SycriError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SycriError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SycriError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SycriError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(SycriError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SycriError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PermissionDenied(SycriError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(SycriError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(SycriError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(SycriError):
    code = grpc.StatusCode.INTERNAL
