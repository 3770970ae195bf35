"""Portcullis: the licensing enforcement gateway (engine, HTTP adapter, registry, audit, CLI, SDK)."""
