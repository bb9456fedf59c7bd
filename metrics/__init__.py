"""Prometheus metrics for the supervisor (the observability issue builds them here)."""

__all__: list[str] = []
