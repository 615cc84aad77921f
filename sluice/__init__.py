"""Sluice: a Kafka-backed event ingestion pipeline for product analytics and experimentation."""

__version__ = "0.1.0"
