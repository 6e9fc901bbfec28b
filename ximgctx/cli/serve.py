"""``ximgctx serve``: the moderation and search service (FastAPI on uvicorn), one process per replica.

:func:`add_server_args` and :func:`serve` are shared with ``ximgctx queue serve``, which is this service with
the labeling queue mounted: the two take the same server flags. Every :class:`ServeConfig` field is a flag,
generated from the dataclass (``api_keys`` is read from ``--api-key-file``, ``allow_url_hosts`` and
``allow_url_networks`` from the repeatable ``--allow-url-host`` and ``--allow-url-network``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ximgctx.cli._args import add, add_dataclass_args, existing_file, parser

__all__ = ["add_server_args", "build_parser", "main", "serve", "server_config"]

SERVE_CONFIG = "ximgctx.serve.config:ServeConfig"

DESCRIPTION = """\
Serve a model over HTTP: OpenAI-compatible POST /v1/moderations (image + text + replies), /v1/predict,
/v1/search, /v1/feedback, GET /v1/models, POST /admin/reload, /healthz, /readyz, /metrics.

  ximgctx serve --model runs/x/best --api-key-file keys.txt [--index runs/index] [--memory runs/x/best.memory]
  ximgctx serve --model runs/x/best --no-auth            # loopback only (127.0.0.1)
  ximgctx serve --model runs/x/best --api-key-file keys.txt --loop-db loop.sqlite --queue-key-file q.key
                                                         # replicas on one loop store answer alike
  ximgctx serve --registry-root models/ --loop-db loop.sqlite --api-key-file keys.txt
                                                         # serve the registry's promoted version; follow it

Models are swapped without a restart: POST /admin/reload (an admin key) with {"model": "DIR",
"expected_sha256": "...", "version": "..."} loads a folder under --model-root (no other folder is read) beside
the served model, and serves it once it is verified and warmed up; requests that started on the old model
finish on it. An empty body reloads the configured model (--model, or the registry's promoted version). With
--registry-root, every --state-poll-s the server checks which version the registry promotes (ximgctx loop
promote / rollback) and swaps to it. Every response's "model" and "model_version", /readyz and /v1/models
name the model that answered.

API keys: --api-key-file, one key a line as KEY [scope,scope] [name=NAME], and/or XIMGCTX_API_KEYS
(comma-separated); clients send Authorization: Bearer KEY. Scopes: moderate (/v1/moderations, /v1/predict),
search (/v1/search), review (/v1/feedback), admin (queue operator routes, DELETE /v1/feedback/ID,
POST /admin/reload). A key
line without scopes means moderate,search. The store records name= (or a digest of the key) as who acted.
Without keys the server binds loopback only, with --no-auth. --governance is the policy that /v1/feedback
posts must pass.
"""

LIMITS = """\
Limits of one request (the flags below change them; defaults shown):
  input    a string, a list of at most {max_inputs} strings (--max-inputs; one result each, in order), or a
           list of content parts: one post, its text parts and at most one image (an image_url data: URL)
  text     at most {max_text_chars} characters per text or reply (--max-text-chars), no NUL character
  replies  at most {max_replies} per post (--max-replies), sent in extra_body {{"ximgctx": {{"replies": []}}}}
  image    at most {max_image_bytes} decoded bytes (--max-image-bytes), {max_image_pixels} pixels
           (--max-image-pixels)
  body     at most {max_body_bytes} bytes (--max-body-bytes; 413 beyond it)
A request over a request-wide limit (too many inputs, two images in one post, too large a body) is an
OpenAI-style error, {{"error": {{"message", "type", "param", "code"}}}}, whose param names the field. An input
that cannot be scored by itself (a NUL character, over --max-text-chars or --max-replies, empty) gets its
own result, in its place, with an "error" object and nothing scored; its decision is the policy's
unreadable_input (review by default; allow for an empty input) and the other inputs are scored.

OpenAI clients (the openai SDK, LiteLLM, LangChain's OpenAIModerationMiddleware, openai-guardrails): set the
base URL to http://HOST:PORT/v1 (a URL without /v1 is answered 400 naming the right one, never a 404 that a
client might take as "no moderation here"). The response's "model" is NAME@DIGEST of the served model
(--model-name, else the model card's model_name, else ximgctx; the first 12 hex digits of its manifest's
SHA-256); a request may leave model out, name the served model, or send omni-moderation-latest,
omni-moderation-2024-09-26, text-moderation-latest or text-moderation-stable (any other name is a 400 with
param "model"). Clients read only "flagged": it is true for decisions at or above the policy's flag_on
(block by default; flag_on: review in the --policy YAML makes them hold review decisions too).
"""


def description() -> str:
    """The command's description with the limits' defaults, read from ServeConfig's source (no import)."""
    from ximgctx.cli._args import source_fields

    defaults = {f.name: f.default for f in source_fields(SERVE_CONFIG)}
    return DESCRIPTION + "\n" + LIMITS.format(**defaults)


def add_server_args(p: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    """The flags of a served model: ``serve`` and ``queue serve`` take exactly these (``serve`` may name
    the model by ``--registry-root`` instead of ``--model``)."""
    add(p, "--model", required=model_required)
    add(p, "--expect-sha256")
    add(p, "--trust-remote-arch")
    add(p, "--device", default="auto")
    add(p, "--index")
    add(p, "--memory")
    add(p, "--policy")
    add(p, "--governance")
    p.add_argument(
        "--api-key-file",
        type=existing_file,
        default=None,
        help="operators' API keys, one a line: KEY [scope,scope] [name=NAME]",
    )
    p.add_argument(
        "--allow-url-host",
        action="append",
        default=[],
        metavar="HOST",
        help="an http(s) host images may be fetched from, HOST (ports 80 and 443) or HOST:PORT (repeatable); "
        "none by default: data: URLs only",
    )
    add(p, "--allow-url-network", repeat=True)
    add(p, "--explain", default="flagged")
    by_flag = {"api_keys", "allow_url_hosts", "allow_url_networks", "explain"}  # flags of their own, above
    add_dataclass_args(p, SERVE_CONFIG, exclude=by_flag)
    add(p, "--loop-db")
    add(p, "--registry-root")
    p.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds in-flight requests get at shutdown"
    )


def server_config(args: argparse.Namespace) -> Any:
    """The :class:`ServeConfig` the flags describe, its keys checked (before any model loads)."""
    from ximgctx.cli._args import dataclass_from_args
    from ximgctx.serve.config import ServeConfig, read_api_keys

    config = dataclass_from_args(
        ServeConfig,
        args,
        api_keys=read_api_keys(args.api_key_file),
        allow_url_hosts=args.allow_url_host,
        allow_url_networks=args.allow_url_network,
    )
    config.check_auth()  # a misconfigured server fails at once
    return config


def governance_policy(path: str | None) -> Any:
    """The governance policy of ``--governance`` (None without it)."""
    if not path:
        return None
    from ximgctx.governance import GovernancePolicy

    return GovernancePolicy.from_yaml(path)


def serve(app: Any, config: Any, args: argparse.Namespace, *, log_level: str = "info") -> None:
    """Run ``app`` until it is stopped, through the one server start (ximgctx.serve.run.run_server)."""
    from ximgctx.serve.run import run_server

    run_server(app, config, graceful_timeout_s=args.graceful_timeout, log_level=log_level)


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    p = parser(command, description())
    add_server_args(p, model_required=False)
    add(p, "--queue-key-file")
    return p


def loop_store(args: argparse.Namespace) -> Any:
    """The loop store of ``--loop-db`` (None without it)."""
    if not args.loop_db:
        return None
    from ximgctx.queue import QueueConfig, QueueStore, read_queue_key

    return QueueStore(QueueConfig(db=args.loop_db, key=read_queue_key(args.queue_key_file)))


def registry_model(args: argparse.Namespace, store: Any) -> tuple[Any, Any, Any, Any]:
    """The model to serve: ``--model`` (and ``--expect-sha256``), or with ``--registry-root`` the promoted
    version's folder, digest and version number (``--model`` before the first promotion), and the model
    source the server polls (None without a registry)."""
    if not args.registry_root:
        return args.model, args.expect_sha256, None, None
    from ximgctx.errors import ConfigError
    from ximgctx.queue.registry import Registry
    from ximgctx.serve.swap import registry_source

    if store is None:
        raise ConfigError("--registry-root needs --loop-db: the registry's versions are rows of its store")
    registry = Registry(store, args.registry_root)
    promoted = registry.promoted()
    if promoted is None:  # nothing promoted yet: --model serves until the first promotion
        return args.model, args.expect_sha256, None, registry_source(registry)
    return str(promoted.path), promoted.digest, str(promoted.version), registry_source(registry)


def main(argv: list[str] | None = None, command: str = "serve") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ximgctx.errors import ConfigError, XimgctxError

    try:
        from ximgctx.models.open_clip_encoder import trust_remote_arch
        from ximgctx.serve.app import create_app

        config = server_config(args)
        store = loop_store(args)
        model, expect, version, source = registry_model(args, store)
        if not model:
            raise ConfigError("give --model DIR, or --registry-root DIR with a promoted version (--loop-db)")
        with trust_remote_arch(args.trust_remote_arch):
            app = create_app(
                model,
                config=config,
                policy=args.policy,
                index=args.index,
                memory=args.memory,
                governance=governance_policy(args.governance),
                device=args.device,
                expected_sha256=expect,
                state=store,
                version=version,
                model_source=source,
            )
    except XimgctxError as e:
        print(f"ximgctx {command}: {e}", file=sys.stderr)
        return 2
    serve(app, config, args)
    return 0
