"""Porter's rewrite rules: one module per concern, each exporting ``RULE``.

Plain op mappings are rows in ``ops.toml``; library symbols are rows in ``symbols.toml``.
"""
