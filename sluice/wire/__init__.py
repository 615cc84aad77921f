"""Wire structs, one module per SDK family, decoded straight from request bytes by msgspec.

The gateway decodes them to check what it accepts; the worker decodes them again from the raw
record to normalize. Field names are the family's own (camelCase where the SDK sends it).
"""
