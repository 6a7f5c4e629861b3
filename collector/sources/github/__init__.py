"""GitHub deployments and CI reports into DORA's four keys (see docs/dora.md).

Two sources share one deployment history (`history.DoraEngine`): `github` (webhooks, API polling) and
`deployments` (POST /deployments from CI).
"""

from __future__ import annotations

from collector.sources.github.ci import DeploymentsSource
from collector.sources.github.source import GitHubSource

__all__ = ["DeploymentsSource", "GitHubSource"]
