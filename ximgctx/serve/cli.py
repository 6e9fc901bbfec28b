"""``ximgctx serve``: the moderation and search service (FastAPI on uvicorn), one process per replica."""

from __future__ import annotations

import argparse
import logging
import sys

from ximgctx._extras import require
from ximgctx.errors import XimgctxError

__all__ = ["main"]

DESCRIPTION = """\
Serve a model over HTTP: OpenAI-compatible POST /v1/moderations (image + text + replies), /v1/predict,
/v1/search, /v1/feedback, /healthz, /readyz, /metrics.

  ximgctx serve --model runs/x/best --api-key-file keys.txt [--index runs/index] [--memory runs/x/best.memory]
  ximgctx serve --model runs/x/best --no-auth            # loopback only (127.0.0.1)

API keys: --api-key-file (one per line) and/or XIMGCTX_API_KEYS (comma-separated); clients send
Authorization: Bearer KEY. Without keys the server binds loopback only, with --no-auth.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ximgctx serve", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder written by save_pretrained / ximgctx train")
    p.add_argument(
        "--expect-sha256", default=None, help="refuse a model folder whose artifact digest differs"
    )
    p.add_argument("--index", default=None, help="search index folder for /v1/search")
    p.add_argument(
        "--memory",
        default=None,
        help="label memory folder: blended into predictions; /v1/feedback adds to it",
    )
    p.add_argument("--policy", default=None, help="moderation policy YAML (default: the shipped one)")
    p.add_argument("--governance", default=None, help="governance policy YAML that feedback must pass")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs API keys)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--api-key-file", default=None, help="file with one API key per line")
    p.add_argument("--no-auth", action="store_true", help="no API keys (loopback host only)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")
    p.add_argument("--max-batch-size", type=int, default=16, help="posts coalesced into one model batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--max-queue", type=int, default=256, help="posts waiting before requests get 503")
    p.add_argument("--max-body-bytes", type=int, default=8 << 20, help="request body limit (413 beyond)")
    p.add_argument("--max-image-pixels", type=int, default=40_000_000, help="decode limit of this server")
    p.add_argument(
        "--allow-url-host",
        action="append",
        default=[],
        metavar="HOST",
        help="an http(s) host images may be fetched from (repeatable); none by default: data: URLs only",
    )
    p.add_argument(
        "--explain", default="flagged", choices=["flagged", "all", "none"], help="moderation explanations"
    )
    p.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds in-flight requests get at shutdown"
    )
    return p


def main(argv: list[str] | None = None, command: str = "serve") -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from ximgctx.serve.app import create_app
        from ximgctx.serve.config import ServeConfig, read_api_keys

        config = ServeConfig(
            host=args.host,
            port=args.port,
            api_keys=read_api_keys(args.api_key_file),
            no_auth=args.no_auth,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
            max_body_bytes=args.max_body_bytes,
            max_image_pixels=args.max_image_pixels,
            allow_url_hosts=args.allow_url_host,
            explain=args.explain,
        )
        config.check_auth()  # before the model loads: a misconfigured server fails at once
        governance = None
        if args.governance:
            from ximgctx.governance import GovernancePolicy

            governance = GovernancePolicy.from_yaml(args.governance)
        app = create_app(
            args.model,
            config=config,
            policy=args.policy,
            index=args.index,
            memory=args.memory,
            governance=governance,
            device=args.device,
            expected_sha256=args.expect_sha256,
        )
    except XimgctxError as e:
        print(f"ximgctx serve: {e}", file=sys.stderr)
        return 2
    uvicorn = require("uvicorn", feature="ximgctx serve")

    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        timeout_graceful_shutdown=args.graceful_timeout,
        access_log=False,  # request lines could carry ids; metrics count requests instead
    )
    return 0
