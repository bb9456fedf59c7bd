"""Prometheus metrics for the supervisor, on an injected `CollectorRegistry`.

Names start with `parlant_supervisor_`; no label carries a session id. Gauges are computed at
scrape time from `statistics()` (`StatisticsCollector`); counters and histograms are recorded
as things happen (`SupervisorMetrics`). Alert rules: `metrics/alerts.yml`; a Grafana
dashboard: `metrics/dashboard.json`.
"""

from actors.runtime import Recorder
from metrics._collector import StatisticsCollector, StatisticsSource
from metrics._exposition import MetricsServer, make_asgi_app, start_http_server
from metrics._instruments import PREFIX, SupervisorMetrics

__all__ = [
    "PREFIX",
    "MetricsServer",
    "Recorder",
    "StatisticsCollector",
    "StatisticsSource",
    "SupervisorMetrics",
    "make_asgi_app",
    "start_http_server",
]
