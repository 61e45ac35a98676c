from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.response import Response

from opsplane.roles import roles_of


@extend_schema(
    summary="The authenticated user and their roles",
    responses=inline_serializer("Me", {
        "username": serializers.CharField(),
        "roles": serializers.ListField(child=serializers.CharField()),
    }),
)
@api_view(["GET"])
def me(request):
    return Response({"username": request.user.get_username(),
                     "roles": sorted(roles_of(request.user))})
