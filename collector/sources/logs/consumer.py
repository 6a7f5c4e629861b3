"""Which `LineConsumer` the logs source feeds: the rules engine, for the configured presets and rules
file, or for the `levels` preset (`app_log_lines_total{level}`) when neither is configured."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.logpipe import LineConsumer
    from collector.metrics import MetricState
    from collector.rules import RuleSet
    from collector.settings import LogsSettings

__all__ = ["build_consumer", "level_counter"]


def level_counter(metrics: MetricState, log: logging.Logger, max_series: int = 10_000) -> RuleSet:
    """The consumer of a logs source with no rules: app log lines counted by normalised level.

    Lines with invalid UTF-8 anywhere count as `invalid_utf8` (the rule reads three fields, so the
    decoder checks the rest itself), as the level counter did before it was a preset.
    """
    from collector.rules import RuleSet  # imported when a logs source starts, not with the settings

    return RuleSet(metrics, log, ["levels"], None, max_series, check_utf8=True)


def build_consumer(settings: LogsSettings, metrics: MetricState, log: logging.Logger) -> LineConsumer:
    """The rules engine for the configured presets and rules file, or the level counter without them.

    Raises:
        ValueError: the rules cannot be loaded (the message names the rule and field).
    """
    if not settings.preset and settings.rules is None:
        return level_counter(metrics, log, settings.max_series)
    from collector.rules import RuleSet

    return RuleSet(metrics, log, settings.preset, settings.rules, settings.max_series)
