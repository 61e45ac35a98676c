from django.core.management import call_command


def test_openapi_schema_is_valid_and_complete(tmp_path, db):
    """Every API view documents itself: drf-spectacular finds nothing to guess."""
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    assert "bearerToken" in text and "/api/v1/hosts/{name}/trust-key/" in text
