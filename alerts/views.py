from django.shortcuts import render

from opsplane.roles import Role, role_required


@role_required(*(Role.ONCALL, Role.OPERATOR))
def index(request):
    return render(request, "alerts/index.html")
