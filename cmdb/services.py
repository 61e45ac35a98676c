"""Every write of the inventory, and the rules that go with it."""

from cmdb.models import Environment

DEMO_ENVIRONMENTS = [
    ("dev", "Development", False),
    ("staging", "Staging", False),
    ("prod", "Production", True),
]


def ensure_demo_environments():
    """dev, staging and prod (protected); existing ones are left as they are."""
    return [
        Environment.objects.get_or_create(
            name=name, defaults={"description": description, "protected": protected}
        )[0]
        for name, description, protected in DEMO_ENVIRONMENTS
    ]
