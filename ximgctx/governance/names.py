"""Person names through a named-entity model: a spaCy pipeline run by Presidio's spaCy NLP engine.

ximgctx ships no NER model (spaCy's trained English pipelines are not published on the package index) and
never downloads one: the policy's ``ner_model`` (or ``ximgctx govern --ner-model``) names a pipeline the
operator has, a folder written by ``nlp.to_disk`` or an installed pipeline package (``en_core_web_sm``
installed from its wheel). Presidio's :class:`~presidio_analyzer.nlp_engine.SpacyNlpEngine` runs it (built
through :class:`~presidio_analyzer.nlp_engine.NlpEngineProvider`, its download step replaced by an error)
and Presidio's ``SpacyRecognizer`` turns its ``PERSON``/``PER`` entities into the redaction kind ``name``.

The NER analyzer is separate from the pattern analyzer (which keeps its no-op NLP engine), so turning names
on changes no other kind's matches. Without a model no NER runs, names stay in the text, and the audit says
so (:func:`describe`).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ximgctx.errors import ConfigError
from ximgctx.governance._presidio import import_presidio

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

_LANG = "en"  # Presidio's language key for the one pipeline (any spaCy language works under it)
_PERSON = "PERSON"
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: what the audit says when no NER model ran
NO_NER = (
    "no NER model ran: person names were NOT redacted (name a spaCy pipeline with ner_model in the policy or "
    "`ximgctx govern --ner-model`)"
)


def _is_package(name: str) -> bool:
    """Whether ``name`` is an installed distribution: the test Presidio's engine makes before loading it."""
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def check_ner_model(model: str, where: str) -> None:
    """Raise ConfigError (naming ``where``) unless ``model`` is a saved pipeline folder or an installed
    pipeline package: nothing is ever downloaded in its place."""
    path = Path(model)
    if path.is_dir():
        if not (path / "config.cfg").is_file():
            raise ConfigError(
                f"{where}: {model} is a folder without config.cfg, not a spaCy pipeline saved by nlp.to_disk"
            )
        return
    if _PACKAGE.fullmatch(model) and _is_package(model):
        return
    raise ConfigError(
        f"{where}: {model!r} is neither a folder holding a saved spaCy pipeline nor an installed spaCy "
        "pipeline package; ximgctx downloads no model (install the pipeline's wheel, or save one with "
        "nlp.to_disk)"
    )


@dataclass(frozen=True)
class NameEngine:
    """The analyzer that finds names with one pipeline, and what the audit says about that pipeline."""

    analyzer: AnalyzerEngine
    info: dict[str, Any]


@lru_cache(maxsize=4)
def name_engine(model: str) -> NameEngine:
    """One NER analyzer per process and pipeline, built on first use and shared by every redactor."""
    check_ner_model(model, "ner_model")
    import_presidio()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider, SpacyNlpEngine
    from presidio_analyzer.nlp_engine.ner_model_configuration import MODEL_TO_PRESIDIO_ENTITY_MAPPING
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    class _LocalSpacyNlpEngine(SpacyNlpEngine):
        """Presidio's spaCy engine that loads what is there and never downloads."""

        @staticmethod
        def _download_spacy_model_if_needed(model_name: str) -> None:
            check_ner_model(model_name, "ner_model")

    mapping = {k: v for k, v in MODEL_TO_PRESIDIO_ENTITY_MAPPING.items() if v == _PERSON}
    config = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": _LANG, "model_name": model}],
        "ner_model_configuration": {"model_to_presidio_entity_mapping": mapping},
    }
    try:
        provider = NlpEngineProvider(nlp_engines=(_LocalSpacyNlpEngine,), nlp_configuration=config)
        engine = provider.create_engine()
        assert isinstance(engine, SpacyNlpEngine) and engine.nlp is not None  # the one engine it may build
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - spaCy's load errors are many; each is the pipeline's fault
        raise ConfigError(f"ner_model {model!r}: spaCy cannot load it: {e}") from e
    nlp = engine.nlp[_LANG]
    labels = sorted({label for labels in nlp.pipe_labels.values() for label in labels})
    person = [label for label in labels if label in mapping]
    if not person:
        raise ConfigError(
            f"ner_model {model!r}: its pipeline {nlp.pipe_names} predicts no person label "
            f"({sorted(mapping)}); its labels are {labels}"
        )
    # every other label is dropped quietly (Presidio warns once per entity about labels it cannot map)
    engine.ner_model_configuration.labels_to_ignore = [label for label in labels if label not in mapping]
    registry = RecognizerRegistry(
        recognizers=[SpacyRecognizer(supported_language=_LANG, supported_entities=[_PERSON])],
        supported_languages=[_LANG],
    )
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[_LANG])
    meta = nlp.meta
    info = {
        "ner_model": model,
        "pipeline": f"{meta.get('lang', nlp.lang)}_{meta.get('name', 'pipeline')}",
        "version": str(meta.get("version", "")),
        "components": list(nlp.pipe_names),
        "person_labels": person,
        "engine": "presidio SpacyNlpEngine + SpacyRecognizer",
    }
    return NameEngine(analyzer=analyzer, info=info)


def find_names(view: str, model: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every person name the pipeline finds in ``view``."""
    results = name_engine(model).analyzer.analyze(
        text=view, language=_LANG, entities=[_PERSON], score_threshold=0.3
    )
    return [(r.start, r.end) for r in results]


def describe(model: str | None, redacted: bool) -> dict[str, Any]:
    """The audit's ``names`` section: which NER model ran (or that none did)."""
    if model is None:
        return {"ner_model": None, "ran": False, "redacted": False, "note": NO_NER}
    info = dict(name_engine(model).info)
    info.update(ran=redacted, redacted=redacted)
    if not redacted:
        info["note"] = "the policy's redact list does not hold 'name': the NER model did not run"
    return info
