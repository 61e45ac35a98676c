"""Read-only admin pages: every write goes through ``approvals.services`` (audited)."""

from django.contrib import admin

from approvals.models import (
    ApprovalPolicy,
    ApprovalRequest,
    Decision,
    FreezeWindow,
    MaintenanceWindow,
)


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApprovalPolicy)
class PolicyAdmin(ReadOnly):
    list_display = ["name", "enabled", "min_risk", "validity_hours", "allow_author"]


@admin.register(ApprovalRequest)
class RequestAdmin(ReadOnly):
    list_display = ["title", "subject_type", "subject_id", "status", "round", "opened_at",
                    "expires_at"]
    list_filter = ["status"]


@admin.register(Decision)
class DecisionAdmin(ReadOnly):
    list_display = ["request", "kind", "by_name", "round", "created_at"]
    list_filter = ["kind"]


@admin.register(FreezeWindow, MaintenanceWindow)
class WindowAdmin(ReadOnly):
    list_display = ["name", "enabled", "kind", "timezone"]
