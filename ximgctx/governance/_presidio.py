"""Presidio's import, without the model stacks it does not need for pattern recognizers."""

from __future__ import annotations

import sys

from ximgctx._extras import missing_extra

_HEAVY = ("transformers", "torch", "torchvision")


def import_presidio() -> None:
    """Import ``presidio_analyzer`` without the model stacks its NLP-engine modules pull in at import
    (transformers, torch: seconds of start-up for engines the pattern analyzer never uses). Those not
    already imported are hidden while Presidio imports (it treats them as absent, as it does when they are
    not installed) and visible again afterwards."""
    if sys.modules.get("presidio_analyzer") is not None:
        return
    hidden = [m for m in _HEAVY if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # "import m" raises ImportError meanwhile
    try:
        import presidio_analyzer  # noqa: F401
        import presidio_analyzer.nlp_engine  # noqa: F401
    except ImportError as e:
        raise missing_extra(e, feature="PII redaction (govern)") from None
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
