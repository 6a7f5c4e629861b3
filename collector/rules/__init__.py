"""Log rules: a YAML rules file and named presets turned into metric updates (see docs/metrics.md)."""

from __future__ import annotations

from collector.rules.engine import RuleSet, load_specs
from collector.rules.presets import PRESETS
from collector.rules.schema import RulesError

__all__ = ["PRESETS", "RuleSet", "RulesError", "load_specs"]
