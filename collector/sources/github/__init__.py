"""GitHub deployments and CI reports into DORA's four keys (see docs/dora.md).

Two sources share one deployment history: `github` (webhooks, API polling) and `deployments`
(POST /deployments from CI). The app builds one `engine.DoraEngine` (the I/O shell: store, metrics)
and passes it to both; the transitions are the pure `history.History`, the maths `collector.dora`,
the SQL `store_sql`.
"""

from __future__ import annotations

from collector.sources.github.ci import DeploymentsSource
from collector.sources.github.source import GitHubSource

__all__ = ["DeploymentsSource", "GitHubSource"]
