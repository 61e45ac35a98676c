from django.shortcuts import render

from opsplane.roles import Role, role_required


@role_required(*(Role.OPERATOR, Role.ONCALL, Role.APPROVER))
def index(request):
    return render(request, "cmdb/index.html")
