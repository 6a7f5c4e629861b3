"""Log rules: a YAML rules file and named presets turned into metric updates (see docs/metrics.md).

The path of a batch of log lines through this package:

- `schema` / `stages` / `presets`: YAML (or a preset's data) validated into frozen specs; a rule's
  `match:` becomes a typed tree (`match.Cond`, `AllOf`, `AnyOf`, `Not`).
- `compile`: `plan()` merges rules per metric (pure, so a bad reload fails before anything changes);
  `build()` registers the families, picks the discriminator field (`message`, ...) and makes one
  `decide.Group` per set of rules a discriminator value can reach.
- `decode`: one msgspec `decode_lines` per batch into Structs holding only the fields the rules read.
- `loop`: the only generated code, the loop over a decoded batch (dispatch, field reads inlined into a
  tuple, no call per line); its source is in linecache as `<rules loop ...>`.
- `decide`: per distinct tuple of raw fields, each rule's residual match (`match.evaluate`) and labels
  (`normalize`, budgets) are interpreted once and cached: the series key per rule, or no match.
- `gather`: updates that commute (counters, histograms) are gathered per batch and applied per entry;
  the others are applied line by line, in line order, by updates inlined in the generated loop.
- `engine.RuleSet`: the `LineConsumer` around it all (hot reload, expiry, per-rule match counts);
  `explain`: `replay --explain` (the same `evaluate`, with reasons) and `--show-compiled`.
"""

from __future__ import annotations

from collector.rules.engine import RuleSet, load_specs
from collector.rules.presets import PRESETS
from collector.rules.schema import RulesError

__all__ = ["PRESETS", "RuleSet", "RulesError", "load_specs"]
