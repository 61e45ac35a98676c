from django.contrib import admin

from cmdb.models import Environment


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "protected", "description"]
