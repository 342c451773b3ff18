"""One module per model family, each defining its ``FAMILY`` record.

These modules import without torch (heavy code is imported inside the functions
the record points to), so the registry can list every family for the CLI at once.
Register a new module with one line in :data:`geoseg.models.registry.FAMILY_MODULES`.
"""
