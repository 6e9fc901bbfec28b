"""Data governance: keep only what may be trained on, redact personal data, audit, and mark the result.

from ximgctx.governance import GovernancePolicy, govern, check_governed
result = govern(posts, GovernancePolicy.from_yaml("configs/governance/default.yaml"))
check_governed(result.posts, allow_ungoverned=False)   # what training calls
audit = govern_shards("shards/", "governed/", policy, processes=8)   # a shard folder, split by shard
"""

from __future__ import annotations

from ximgctx.governance.check import (
    GovernanceStatus,
    UngovernedDataError,
    check_governed,
    governance_summary,
    is_governed,
    require_governed,
)
from ximgctx.governance.core import (
    DROP_REASONS,
    MARKER_KEY,
    AuditReport,
    GovernanceMarker,
    GovernanceResult,
    collect_opt_outs,
    govern,
    iter_govern,
)
from ximgctx.governance.flags import is_direct_message, truthy
from ximgctx.governance.identity import author_digest, normalize_author
from ximgctx.governance.keys import load_key
from ximgctx.governance.pii import KINDS, Redactor, find_pii
from ximgctx.governance.policy import GovernancePolicy, read_opt_out_file
from ximgctx.governance.shards import govern_shards

__all__ = [
    "DROP_REASONS",
    "KINDS",
    "MARKER_KEY",
    "AuditReport",
    "GovernanceMarker",
    "GovernancePolicy",
    "GovernanceResult",
    "GovernanceStatus",
    "Redactor",
    "author_digest",
    "load_key",
    "normalize_author",
    "require_governed",
    "truthy",
    "UngovernedDataError",
    "check_governed",
    "collect_opt_outs",
    "find_pii",
    "govern",
    "governance_summary",
    "govern_shards",
    "is_direct_message",
    "is_governed",
    "iter_govern",
    "read_opt_out_file",
]
