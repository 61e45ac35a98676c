from django.shortcuts import render

from opsplane.roles import Role, role_required


@role_required(*(Role.OPERATOR, Role.APPROVER))
def index(request):
    return render(request, "changes/index.html")
