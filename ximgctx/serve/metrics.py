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
    """Requests, latency, batch sizes, queue depth, errors by kind, decoded pixels and URL fetches."""

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
        self.pixels = Counter(
            "ximgctx_decode_pixels_total",
            "image pixels of requests by API key and outcome (admitted, over_request, over_rate), counted "
            "from image headers before decoding",
            ["key", "outcome"],
            registry=self.registry,
        )
        self.budget_left = Gauge(
            "ximgctx_decode_budget_pixels",
            "pixels left in an API key's decode budget at its last request",
            ["key"],
            registry=self.registry,
        )
        self.fetches = Counter(
            "ximgctx_url_fetches_total",
            "image URL fetches by outcome (ok, refused: the address is not allowed, failed)",
            ["outcome"],
            registry=self.registry,
        )

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, batcher: str, n: int) -> None:
        self.batch.labels(batcher).observe(n)

    def set_depth(self, batcher: str, n: int) -> None:
        self.depth.labels(batcher).set(n)

    def decode_pixels(self, key: str, outcome: str, pixels: int) -> None:
        self.pixels.labels(key, outcome).inc(pixels)

    def pixel_budget_left(self, key: str, pixels: float) -> None:
        self.budget_left.labels(key).set(pixels)

    def url_fetch(self, outcome: str) -> None:
        self.fetches.labels(outcome).inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
