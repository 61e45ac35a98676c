"""Domain errors every app raises from its services, and how the API reports them."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class DomainError(Exception):
    """A business rule refused the request. ``status`` is what the API answers."""

    status = status.HTTP_409_CONFLICT


def api_exception_handler(exc, context):
    """DRF's handler, plus our services' exceptions: a model ``ValidationError`` is a
    400 with per-field messages, ``PermissionDenied`` a 403, a ``DomainError`` its
    status (409 unless it says otherwise)."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, DomainError):
        return Response({"detail": str(exc)}, status=exc.status)
    return drf_exception_handler(exc, context)
