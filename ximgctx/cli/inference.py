"""``ximgctx predict | moderate | calibrate | index | search``.

    ximgctx predict   --model DIR --data posts.jsonl --out preds.jsonl|.parquet
    ximgctx moderate  --model DIR --data posts.jsonl --out decisions.jsonl [--policy FILE] [--explain flagged]
    ximgctx calibrate --model DIR --data val.jsonl --out policy.yaml
                      (--target-precision 0.9 | --target-fpr 0.01)
                      [--review-recall 0.95] [--policy FILE] [--report calibration.json]
    ximgctx index     --model DIR --data posts.jsonl --out index_dir [--mode exact|ivf]
    ximgctx search    --index index_dir (--text Q | --image PATH | --post ID) [-k 10] [--where intent=threat]

``predict`` and ``moderate`` shard across processes under ``torchrun`` / ``accelerate launch`` (see
:mod:`ximgctx.inference.batch`); the other commands run in one process. Summaries go to stderr as JSON,
results to ``--out`` (``search`` prints its results as JSON on stdout, the same JSON as ``POST /v1/search``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ximgctx.cli._args import add, existing_file, parser

__all__ = ["build_parser", "main"]


def _common(p: argparse.ArgumentParser, *, out_help: str, on_error: str) -> None:
    """The flags of the commands that run a model over posts."""
    add(p, "--model", required=True)
    add(p, "--expect-sha256")
    add(p, "--trust-remote-arch")
    add(p, "--data", required=True)
    add(p, "--image-root")
    add(p, "--confine-images")
    add(p, "--on-error", default=on_error)
    p.add_argument("--out", required=True, help=out_help)
    add(p, "--batch-size", default=32)
    add(p, "--device", default="auto")
    add(p, "--dtype", default="auto")
    add(p, "--no-progress")


def _barrier(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--barrier-timeout",
        type=float,
        default=1800.0,
        help="seconds process 0 waits for the others to finish their shards before merging",
    )


def _search_args(p: argparse.ArgumentParser, command: str) -> None:
    """The arguments of ``index`` and ``search``."""
    if command == "index":
        _common(
            p,
            out_help="index folder to write (refused if it holds anything but a search index)",
            on_error="raise",
        )
        add(p, "--overwrite")
        add(p, "--key-file")
        p.add_argument(
            "--mode", default="exact", choices=["exact", "ivf"], help="exact (flat) or IVF (approximate)"
        )
        add(p, "--nlist")
        add(p, "--nprobe", default=16)
        add(p, "--allow-ungoverned")
    elif command == "search":
        where_from = p.add_mutually_exclusive_group(required=True)
        add(where_from, "--index")
        where_from.add_argument(
            "--url",
            metavar="URL",
            help="a running ximgctx serve (http://HOST:PORT, with or without /v1) to ask instead of loading "
            "the index and model here; its API key from $XIMGCTX_API_KEY",
        )
        q = p.add_mutually_exclusive_group(required=True)
        q.add_argument("--text", help="text query")
        q.add_argument("--image", type=existing_file, help="image file query")
        q.add_argument("--post", help="post id in the index: more like this")
        add(p, "-k", default=10)
        p.add_argument(
            "--where",
            action="append",
            default=None,
            metavar="TASK=LABEL",
            help="keep posts predicted with this label (repeatable: same task = any, tasks = all); "
            'or a JSON object {"task": ["label", ...]}',
        )
        add(p, "--timeout", default=60.0)
        add(p, "--space", default=None)
        add(p, "--nprobe", default=None)
        add(p, "--model", default=None)
        add(p, "--expect-sha256")
        add(p, "--trust-remote-arch")
        add(p, "--device", default="auto")


_DESCRIPTIONS = {
    "predict": """Predict every task for each post of a manifest: labels, scores, and (with --embeddings) the
        fused embedding. Streams the input; shards across processes under torchrun / accelerate launch.

          ximgctx predict --model DIR --data posts.jsonl --out preds.jsonl|.parquet|-""",
    "moderate": """Moderation decisions for each post: allow / review / block per policy category, calibrated
        scores, and explanations (which of image, text and replies carried the decision).
        --output-format openai writes OpenAI Moderation objects. Streams the input; shards across processes
        under torchrun.

          ximgctx moderate --model DIR --data posts.jsonl --out decisions.jsonl|-
              [--policy FILE] [--explain flagged] [--output-format native|openai]""",
    "calibrate": """Choose a policy's thresholds on labeled validation posts: the block threshold for a target
        precision or false-positive rate, the review threshold for a recall; writes the updated policy.

          ximgctx calibrate --model DIR --data val.jsonl --out policy.yaml
              (--target-precision 0.9 | --target-fpr 0.01) [--review-recall 0.95] [--policy FILE]
              [--report calibration.json]""",
    "index": """Build a search index over posts (fused, image or text embeddings; exact or IVF with FAISS),
        governed posts only unless told. --nprobe is saved as the index's default.

          ximgctx index --model DIR --data posts.jsonl --out index_dir [--mode exact|ivf]""",
    "search": """Query a search index by text, by image, or by a post of the index (more like this),
        optionally filtered by predicted labels; prints the hits as JSON.

          ximgctx search --index index_dir (--text Q | --image PATH | --post ID) [-k 10]
              [--where intent=threat]
          XIMGCTX_API_KEY=KEY ximgctx search --url http://127.0.0.1:8000 --text Q [--where intent=threat]

        --space defaults to image for --text/--image and to fused for --post; --nprobe to the index's own;
        --model to the model recorded in the index. --url asks a running `ximgctx serve --index DIR`
        (POST /v1/search) instead of loading the model here: the same JSON either way,
        {"object": "list", "model", "query", "space", "where", "mode", "data": [{"rank", "id", "score",
        "labels", "text", "has_image"}, ...]}.""",
}


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``predict``, ``moderate``, ``calibrate``, ``index`` or ``search``."""
    p = parser(command, _DESCRIPTIONS[command])
    if command == "predict":
        _common(p, out_help="predictions, .jsonl or .parquet ('-': JSONL on stdout)", on_error="skip")
        _barrier(p)
        p.add_argument("--embeddings", action="store_true", help="also write each post's fused embedding")
    elif command == "moderate":
        _common(p, out_help="moderation results, .jsonl or .parquet ('-': JSONL on stdout)", on_error="skip")
        _barrier(p)
        add(p, "--policy")
        add(p, "--explain", default="flagged")
        p.add_argument(
            "--output-format",
            default="native",
            choices=["native", "openai"],
            help="native: ximgctx's result records; openai: one OpenAI Moderation object per line (JSONL), "
            "with the policy's categories mapped onto OpenAI's 13",
        )
    elif command == "calibrate":
        _common(p, out_help="the updated policy YAML", on_error="raise")
        add(p, "--policy")
        target = p.add_mutually_exclusive_group()
        target.add_argument(
            "--target-precision",
            type=float,
            default=None,
            help="block threshold: the lowest with at least this precision",
        )
        target.add_argument(
            "--target-fpr",
            type=float,
            default=None,
            help="block threshold: the lowest with at most this false-positive rate",
        )
        p.add_argument(
            "--review-recall",
            type=float,
            default=None,
            help="review threshold: the highest that sends at least this share of positives to review",
        )
        p.add_argument(
            "--category", action="append", default=None, help="calibrate only this category (repeatable)"
        )
        add(p, "--report")
    elif command in ("index", "search"):
        _search_args(p, command)
    else:  # pragma: no cover - the dispatcher only routes the commands above
        raise ValueError(f"unknown command {command!r}")
    return p


def _load(args: argparse.Namespace, model: str | None = None, **kwargs: Any) -> Any:
    """The command's :class:`~ximgctx.inference.predictor.Predictor` (digest checked, remote arch opt-in)."""
    from ximgctx.inference.predictor import Predictor

    return Predictor.from_pretrained(
        model or args.model,
        expected_sha256=args.expect_sha256,
        trust_remote_arch=args.trust_remote_arch,
        **kwargs,
    )


def _confine_images(args: argparse.Namespace, predictor: Any) -> None:
    """``--confine-images``: the model's processor reads images from inside the image root only."""
    if not getattr(args, "confine_images", False):
        return
    import os

    from ximgctx.data.images import ImageRoot

    data = os.path.abspath(args.data)
    root = args.image_root or (data if os.path.isdir(data) else os.path.dirname(data))
    predictor.model.processor = predictor.model.build_processor(image_root=ImageRoot(root, confine=True))


def _stderr_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2, default=str), file=sys.stderr)


def _run_batch_job(args: argparse.Namespace, command: str) -> int:
    from ximgctx.inference.batch import distributed_shard, output_format, run_sharded
    from ximgctx.inference.predictor import prediction_schema

    shard = distributed_shard(None if args.device == "auto" else args.device, timeout_s=args.barrier_timeout)
    predictor = _load(args, device=shard.device, dtype=args.dtype, batch_size=args.batch_size)
    _confine_images(args, predictor)
    # a schema (and pyarrow) only for Parquet output; "-" is JSONL on stdout
    parquet = str(args.out) != "-" and output_format(args.out) == "parquet"
    if command == "predict":
        schema = prediction_schema(predictor, embeddings=args.embeddings) if parquet else None

        def job(posts: list[Any]) -> list[dict[str, Any]]:
            return [p.to_dict() for p in predictor.predict(posts, embeddings=args.embeddings)]
    else:
        from ximgctx.inference.moderation import Moderator

        moderator = Moderator(predictor, args.policy, explain=args.explain)
        schema = moderator.moderation_schema() if parquet else None
        if args.output_format == "openai":
            from ximgctx.inference.openai_format import openai_mapping, openai_result

            if str(args.out).endswith(".parquet"):
                from ximgctx.errors import InputError

                raise InputError("--output-format openai writes JSONL; give --out FILE.jsonl")
            mapping, schema = openai_mapping(moderator.policy), None

            def job(posts: list[Any]) -> list[dict[str, Any]]:
                return [{"id": r.id, **openai_result(r, mapping)} for r in moderator.moderate(posts)]
        else:

            def job(posts: list[Any]) -> list[dict[str, Any]]:
                return [r.to_dict() for r in moderator.moderate(posts)]

    summary = run_sharded(
        data=args.data,
        out=args.out,
        job=job,
        shard=shard,
        batch_size=args.batch_size,
        schema=schema,
        image_root=args.image_root,
        confine_images=args.confine_images is not False,
        on_error=args.on_error,
        progress=not args.no_progress,
        desc=command,
    )
    if shard.is_main:
        _stderr_json({"command": command, **summary})
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from ximgctx.data.io import load_posts
    from ximgctx.inference.calibration import calibrate_policy
    from ximgctx.inference.moderation import Moderator
    from ximgctx.models.policy import default_policy_path

    if args.target_precision is None and args.target_fpr is None and args.review_recall is None:
        print(
            "ximgctx calibrate: give --target-precision or --target-fpr (block) and/or --review-recall",
            file=sys.stderr,
        )
        return 2
    predictor = _load(args, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    _confine_images(args, predictor)
    policy_path = args.policy or default_policy_path()
    moderator = Moderator(predictor, policy_path, explain="none")
    posts = load_posts(
        args.data,
        streaming=True,
        image_root=args.image_root,
        on_error=args.on_error,
        confine_images=args.confine_images is not False,
    )
    policy, report = calibrate_policy(
        moderator,
        posts,
        target_precision=args.target_precision,
        target_fpr=args.target_fpr,
        review_recall=args.review_recall,
        categories=args.category,
        batch_size=args.batch_size,
    )
    targets = ", ".join(
        f"{k}={v}"
        for k, v in (
            ("target-precision", args.target_precision),
            ("target-fpr", args.target_fpr),
            ("review-recall", args.review_recall),
        )
        if v is not None
    )
    header = (
        f"ximgctx calibrate --model {args.model} --data {args.data} --policy {policy_path} --out {args.out}\n"
        f"Thresholds chosen on {report['posts']} validation posts ({targets}); each category's\n"
        f"'calibration' field records the operating point reached on that set."
    )
    policy.to_yaml(args.out, header=header)
    report.update({"policy_in": str(policy_path), "policy_out": str(args.out), "data": str(args.data)})
    if args.report:
        from pathlib import Path

        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    _stderr_json({"command": "calibrate", **report})
    return 0


def _index(args: argparse.Namespace) -> int:
    from ximgctx.data.io import load_posts
    from ximgctx.governance import require_governed
    from ximgctx.inference.search import SearchIndex

    predictor = _load(args, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    _confine_images(args, predictor)
    posts = load_posts(
        args.data,
        streaming=True,
        image_root=args.image_root,
        on_error=args.on_error,
        confine_images=args.confine_images is not False,
    )
    posts = require_governed(posts, allow_ungoverned=args.allow_ungoverned, source=args.data, command="index")
    from ximgctx.governance.keys import load_key

    key, held = load_key(args.key_file)  # keys the posts' author digests; only its id is saved
    index = SearchIndex.build(
        predictor,
        posts,
        mode=args.mode,
        nlist=args.nlist,
        nprobe=args.nprobe,
        progress=not args.no_progress,
        author_key=key if held else None,
    )
    path = index.save(args.out, overwrite=args.overwrite, inputs=[args.data, args.model, args.image_root])
    _stderr_json(
        {
            "command": "index",
            "out": str(path),
            "posts": len(index),
            "mode": index.mode,
            "spaces": {s: int(i.ntotal) for s, i in index.indexes.items()},
        }
    )
    return 0


def _where_arg(values: list[str] | None) -> Any:
    """``--where`` values: ``task=label`` strings, or one JSON object."""
    if values and len(values) == 1 and values[0].lstrip().startswith("{"):
        from ximgctx.errors import InputError

        try:
            where = json.loads(values[0])
        except ValueError as e:
            raise InputError(f"--where: not a JSON object ({e})") from None
        if not isinstance(where, dict):
            raise InputError("--where: a JSON filter is an object {task: [labels]}")
        return where
    return values


def _search(args: argparse.Namespace) -> int:
    where = _where_arg(args.where)
    if args.url is not None:
        result = _search_remote(args, where)
    else:
        from ximgctx.inference.search import SearchIndex

        index = SearchIndex.load(args.index)
        if args.text is not None or args.image is not None:
            model_dir = args.model or index.model.get("path")
            if not model_dir:
                print(
                    "ximgctx search: text and image queries need the model; pass --model DIR", file=sys.stderr
                )
                return 2
            index.attach(_load(args, model_dir, device=args.device))
        result = index.search(
            args.text,
            image=args.image,
            post_id=args.post,
            k=args.k,
            where=where,
            space=args.space,
            nprobe=args.nprobe,
        ).to_dict()
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _search_remote(args: argparse.Namespace, where: Any) -> dict[str, Any]:
    """Ask a running service (``POST /v1/search``); its answer is the JSON a local search prints."""
    import base64
    import os

    import httpx

    from ximgctx.errors import InputError

    for flag, value in (("--model", args.model), ("--expect-sha256", args.expect_sha256)):
        if value:
            raise InputError(
                f"{flag} names the model of a local search; with --url the server's model answers"
            )
    base = args.url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise InputError(f"--url: an http:// or https:// address, got {args.url!r}")
    url = base + ("/search" if base.endswith("/v1") else "/v1/search")
    body: dict[str, Any] = {"k": args.k}
    if args.text is not None:
        body["text"] = args.text
    elif args.post is not None:
        body["post_id"] = args.post
    else:
        with open(args.image, "rb") as f:
            data = f.read()
        body["image"] = "data:application/octet-stream;base64," + base64.b64encode(data).decode("ascii")
    for key, value in (("where", where), ("space", args.space), ("nprobe", args.nprobe)):
        if value:
            body[key] = value
    key = os.environ.get("XIMGCTX_API_KEY", "").strip()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as e:
        raise InputError(f"--url {args.url}: {type(e).__name__}: {e}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else None
        raise InputError(f"{url} answered {response.status_code}: {message or response.text[:200]}")
    return answer


def main(argv: list[str] | None = None, command: str = "predict") -> int:
    """Entry point for the inference commands (``command`` is the subcommand name)."""
    from ximgctx.errors import XimgctxError

    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if command in ("predict", "moderate"):
            return _run_batch_job(args, command)
        if command == "calibrate":
            return _calibrate(args)
        if command == "index":
            return _index(args)
        return _search(args)
    except XimgctxError as e:
        # errors a user can fix: one line naming what and where; anything else is a bug and keeps its
        # traceback
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ximgctx {command}: error: {message}", file=sys.stderr)
        return 2
