"""Entry point for launchers: ``accelerate launch scripts/train.py --config FILE [key=value ...]``.

Same arguments as ``ximgctx train``; also ``torchrun --nproc_per_node 2 scripts/train.py --config FILE``.
"""

from ximgctx.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main(command="train"))
