"""The camera box as a service: several sources in one process and one model, reconnects, MQTT, health and
metrics, the frames worth relabelling, and the TOML file that configures it all (docs/service.md).

The stream loop itself (sources, queues, counters) is ``edgeport.runtime.stream``; this package adds what a box
runs around it: ``box.Box`` opens the MQTT sink, the health server and the capture that a ``config.ServiceConfig``
asks for, and builds its sources.
"""

from .box import Box, build_sources
from .capture import Capture
from .config import ServiceConfig, load_config

__all__ = ["Box", "build_sources", "Capture", "ServiceConfig", "load_config"]
