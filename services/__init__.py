"""Sluice's network services."""
