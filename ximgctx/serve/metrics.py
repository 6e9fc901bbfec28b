"""Prometheus metrics of one server (its own registry, so several apps in one process stay apart)."""

from __future__ import annotations

from ximgctx._extras import missing_extra

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )
except ImportError as e:
    raise missing_extra(e, feature="the service's Prometheus metrics") from None

__all__ = ["ServiceMetrics"]


class ServiceMetrics:
    """Requests, latency, batch sizes, queue depth and errors by kind."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ximgctx_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ximgctx_request_seconds",
            "request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch = Histogram(
            "ximgctx_batch_posts",
            "posts per model batch",
            ["batcher"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.depth = Gauge(
            "ximgctx_queue_posts", "posts waiting for the model", ["batcher"], registry=self.registry
        )
        self.errors = Counter("ximgctx_errors_total", "errors by kind", ["kind"], registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, batcher: str, n: int) -> None:
        self.batch.labels(batcher).observe(n)

    def set_depth(self, batcher: str, n: int) -> None:
        self.depth.labels(batcher).set(n)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
