"""``ximgctx bench <benchmark> --out FILE.json``: the flags of every benchmark (the measurements live in
:mod:`ximgctx.bench`, one module per benchmark, each exposing ``run(args) -> dict``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from ximgctx.cli._args import add, add_dataclass_args, parser, plain, source_doc

__all__ = ["build_parser", "main"]

_BENCH = "ximgctx.bench"
_SERVE_CONFIG = "ximgctx.serve.config:ServeConfig"


def _synth(p: argparse.ArgumentParser) -> None:
    add(p, "--n", default=10_000)
    add(p, "--image-size", default=64)
    add(p, "--seed", default=0)


def _streaming(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="20000,100000,200000", help="comma-separated post counts to compare")
    p.add_argument("--formats", default="jsonl,parquet", help="comma-separated: jsonl, parquet")
    add(p, "--workdir")


def _inference(p: argparse.ArgumentParser) -> None:
    add(p, "--arch", default="ViT-B-32")
    p.add_argument("--pretrained", default=None, help="pretrained tag or file (default: random weights)")
    add(p, "--replies", default=8)
    add(p, "--n", default=32)
    add(p, "--batch-size", default=16)
    add(p, "--repeats", default=3)
    add(p, "--device", default="auto")
    add(p, "--dtype", default="auto")
    p.add_argument("--fusion", default="attention", choices=["attention", "concat", "cross"], help="fusion")
    add(p, "--image-size", default=640)
    p.add_argument(
        "--long-replies",
        type=float,
        default=0.08,
        help="share of replies that are long (15-35 words); the rest are stock reactions or 3-12 words",
    )
    add(p, "--threads")
    add(p, "--seed", default=0)


def _search(p: argparse.ArgumentParser) -> None:
    add(p, "--n", default=50_000)
    p.add_argument("--dim", type=int, default=256, help="vector width (synthetic; 256 = default fused width)")
    p.add_argument("--clusters", type=int, default=500, help="mixture components (synthetic)")
    p.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="within-cluster noise norm relative to the centre's (1.0: about 0.5 cosine within a cluster)",
    )
    p.add_argument("--queries", type=int, default=500, help="queries timed")
    add(p, "-k", default=10)
    add(p, "--nlist")
    p.add_argument("--nprobes", default="1,4,16,64", help="comma-separated nprobe values to measure")
    add(p, "--model", default=None)
    add(p, "--data")
    add(p, "--space", default="fused")
    add(p, "--seed", default=0)


def _serve(p: argparse.ArgumentParser) -> None:
    add(p, "--arch", default="ViT-B-32")
    add(p, "--replies", default=8)
    add(p, "--n", default=64)
    p.add_argument("--clients", default="1,8,32", help="concurrency levels")
    p.add_argument("--seconds", type=float, default=20.0, help="time per concurrency level")
    add_dataclass_args(
        p,
        _SERVE_CONFIG,
        only={
            "max_batch_size",
            "max_wait_ms",
            "url_timeout_s",
            "max_request_pixels",
            "pixel_rate",
            "pixel_burst",
        },
        defaults={"max_wait_ms": 10.0},
    )
    p.add_argument("--mixed", type=int, default=1000, help="requests in the robustness run")
    p.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests there")
    p.add_argument(
        "--hostile",
        type=float,
        default=0.1,
        help="share of hostile requests in the attacked run (slow hosts, decode-heavy PNGs, URL floods)",
    )
    p.add_argument("--hostile-clients", type=int, default=16, help="client threads sending them")
    add(p, "--image-size", default=320)
    add(p, "--threads")
    add(p, "--seed", default=0)


def _latency(p: argparse.ArgumentParser) -> None:
    add(p, "--arch", default="ViT-B-32")
    p.add_argument("--small-arch", default="ximgctx-tiny", help="a second, tiny architecture measured beside")
    add(p, "--replies", default=8)
    add(p, "--n", default=16)
    p.add_argument("--requests", type=int, default=60, help="timed requests per path and architecture")
    p.add_argument("--warmup-requests", type=int, default=5, help="untimed requests per path first")
    add_dataclass_args(p, _SERVE_CONFIG, only={"max_wait_ms"})  # the server's own default and meaning
    p.add_argument("--pause-ms", type=float, default=100.0, help="untimed pause before each timed request")
    add(p, "--image-size", default=320)
    add(p, "--threads")
    add(p, "--seed", default=0)


def _dataloader(p: argparse.ArgumentParser) -> None:
    add(p, "--arch", default=None)
    add(p, "--batch-size", default=32)
    p.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    add(p, "--n", default=2048)
    p.add_argument("--steps", type=int, default=8, help="training steps timed")
    p.add_argument("--rss-sizes", default="20000,200000,1000000", help="posts streamed for RSS")
    add(p, "--posts-per-shard", default=10_000)
    p.add_argument("--image-px", type=int, default=32, help="side of the generated PNG images")
    add(p, "--shard-format", default="parquet")
    add(p, "--workdir")
    add(p, "--device", default="cpu")
    add(p, "--quick")


def _gpu(p: argparse.ArgumentParser) -> None:
    add(p, "--quick")
    add(p, "--device", default="cuda")
    p.add_argument("--archs", default=None, help="comma-separated (default ViT-B-32,ViT-L-14)")
    add(p, "--batch-size", default=None)
    add(p, "--replies", default=8)
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per measurement (default 3)")
    p.add_argument("--iters", type=int, default=None, help="timed runs per measurement (default 10)")


def _cli(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--commands", default=None, help="comma-separated commands to time (default: all, with sub-commands)"
    )
    add(p, "--repeats", default=3)
    p.add_argument("--no-startup", action="store_true", help="skip the real command's start-up figure")


def _govern(p: argparse.ArgumentParser) -> None:
    add(p, "--n", default=5000)
    p.add_argument("--pii", type=float, default=0.3, help="share of posts holding personal data")
    p.add_argument("--check", type=int, default=300, help="posts compared with the unoptimised path")
    add(p, "--repeats", default=3)  # fresh processes timed for the start-up figure (0: none)
    add(p, "--seed", default=0)


def _drift(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, "ximgctx.bench.drift:DriftConfig", exclude={"tasks"})
    add(p, "--tasks", default="intent")


#: benchmark -> (module under ximgctx.bench, its flags).
BENCHMARKS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "synth": ("synth", _synth),
    "streaming": ("streaming", _streaming),
    "inference": ("inference", _inference),
    "search": ("search", _search),
    "serve": ("serve", _serve),
    "latency": ("latency", _latency),
    "dataloader": ("dataloader", _dataloader),
    "gpu": ("gpu", _gpu),
    "cli": ("startup", _cli),
    "govern": ("govern", _govern),
    "drift": ("drift", _drift),
}


def build_parser(command: str = "bench") -> argparse.ArgumentParser:
    docs = {name: plain(source_doc(f"{_BENCH}.{module}")) for name, (module, _) in BENCHMARKS.items()}
    p = parser(
        command, (source_doc(_BENCH).split("\n\n")[1]) + "\n\n  ximgctx bench <benchmark> --out FILE.json"
    )
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="<benchmark>")
    for name, (_, flags) in BENCHMARKS.items():
        b = sub.add_parser(
            name,
            help=docs[name].split("\n")[0],
            description=docs[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        b.add_argument("--out", default=None, help="write the JSON result here (also printed)")
        flags(b)
    return p


def main(argv: list[str] | None = None, command: str = "bench") -> int:
    args = build_parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    from ximgctx.bench import environment, write_result
    from ximgctx.errors import XimgctxError

    module = importlib.import_module(f"{_BENCH}.{BENCHMARKS[args.benchmark][0]}")
    if args.benchmark == "cli":  # the benchmark measures the commands; the command line names them
        from ximgctx.cli import command_parsers

        args.command_prefixes = [prefix for prefix, _ in command_parsers()]
    try:
        result = {"benchmark": args.benchmark, "environment": environment(), **module.run(args)}
    except XimgctxError as e:  # a benchmark that cannot run here (no GPU, bad sizes): one line, no traceback
        print(f"ximgctx {command} {args.benchmark}: {e}", file=sys.stderr)
        return 2
    write_result(result, args.out)
    return 0
