"""DataHarvest: event-driven ETL for partner data drops (shared logic of every service)."""

__version__ = "0.1.0"
