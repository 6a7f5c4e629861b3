"""WebSocket health probes (`probe_websocket_*`): periodic and persistent probes, and `/probe`."""

from collector.sources.websocket.source import WebSocketSource

__all__ = ["WebSocketSource"]
