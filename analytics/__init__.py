"""Analytics over the audit trail (SPEC §6): DuckDB views over the Parquet history and the registry
snapshots, a registry of SQL reports, and a synthetic history generator.

Entry points: ``analytics.db.connect(data_dir)`` for a connection with the views,
``analytics.registry.run_report(con, name, **params)`` for a report as an Arrow table.
"""
