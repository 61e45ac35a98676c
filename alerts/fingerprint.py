"""Alert identity, computed exactly as Alertmanager computes it.

prometheus/common ``model.LabelSet.Fingerprint()``: the label names sorted (as bytes),
and for each label its name, the byte 0xFF, its value and 0xFF again, hashed with 64-bit
FNV-1a; printed as 16 lower-case hex digits. Alertmanager drops empty-valued labels
before it fingerprints an alert, so we do too: an alert posted to us directly has the
identity Alertmanager would give it.
"""

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK = 0xFFFFFFFFFFFFFFFF
SEPARATOR = 0xFF


def fingerprint(labels):
    """``labels`` (str -> str) -> 16 hex digits."""
    h = FNV_OFFSET
    items = sorted((name.encode(), value.encode()) for name, value in labels.items() if value)
    for name, value in items:
        for byte in name:
            h = ((h ^ byte) * FNV_PRIME) & MASK
        h = ((h ^ SEPARATOR) * FNV_PRIME) & MASK
        for byte in value:
            h = ((h ^ byte) * FNV_PRIME) & MASK
        h = ((h ^ SEPARATOR) * FNV_PRIME) & MASK
    return f"{h:016x}"
