"""``python -m ximgctx.cli`` (as ``torchrun -m ximgctx.cli train ...`` runs it)."""

from ximgctx.cli import main

raise SystemExit(main())
