from django.shortcuts import render

from opsplane.roles import Role, role_required


@role_required(*(Role.APPROVER, Role.OPERATOR))
def index(request):
    return render(request, "approvals/index.html")
