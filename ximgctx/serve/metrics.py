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

        self.swaps = Counter(
            "ximgctx_model_swaps_total",
            "model swaps by outcome (ok; failed: the load failed and the served model stayed; refused: a "
            "reload naming a folder outside --model-root)",
            ["outcome"],
            registry=self.registry,
        )
        self.swap_seconds = Histogram(
            "ximgctx_model_swap_seconds",
            "seconds from a swap's start to the new model serving (load, verify, memory, warm-up)",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "ximgctx_model_info",
            "the served model (1): its name (NAME@DIGEST), version label and full digest",
            ["name", "version", "digest"],
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "ximgctx_model_loaded_timestamp_seconds",
            "unix time the served model started serving",
            registry=self.registry,
        )
        self.models_draining = Gauge(
            "ximgctx_models_draining",
            "swapped-out models still answering requests that started on them",
            registry=self.registry,
        )

    def swap(self, outcome: str, seconds: float) -> None:
        self.swaps.labels(outcome).inc()
        if outcome == "ok":
            self.swap_seconds.observe(seconds)

    def served(self, name: str, version: str, digest: str | None, loaded_at: float) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, digest or "").set(1)
        self.model_loaded.set(loaded_at)

    def draining(self, n: int) -> None:
        self.models_draining.set(n)

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
