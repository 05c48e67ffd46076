"""Corpus audit: find planted triggers and poisoned rows without knowing the trigger.

Statistics first, no model needed (see docs/audit.md for the method, the output contract and what
the statistics cannot see)::

    from mbdata.audit import AuditConfig, audit_table, audit_path
    result = audit_table(table)                  # any canonical / alpaca-shaped pyarrow table
    result.candidates[0].text, result.flagged    # ranked triggers, per-row verdicts
    audit_path("corpus.jsonl", "audit/", clean_out="clean.jsonl")   # what `mb audit` does

In a build, the recipe's ``audit:`` block runs :class:`AuditStage` right after the sources.
"""

from .config import AuditConfig
from .core import AuditResult, audit_table
from .files import ROWS_SCHEMA, rows_table, trigger_records, write_audit, write_clean
from .run import audit_path
from .stage import AuditStage

__all__ = [
    "ROWS_SCHEMA",
    "AuditConfig",
    "AuditResult",
    "AuditStage",
    "audit_path",
    "audit_table",
    "rows_table",
    "trigger_records",
    "write_audit",
    "write_clean",
]
