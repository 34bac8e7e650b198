"""klog-style logging on stderr (`I1208 02:30:00.123456   4242 worker.py:88] message`), so
the dataplane's lines read like kube-proxy's in `kubectl logs` and log tooling."""
from __future__ import annotations

import logging
import os
import sys
import time

__all__ = ["setup_logging"]

_LEVEL_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
                 logging.CRITICAL: "F"}


class KlogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        micros = int((record.created % 1) * 1e6)
        head = (f"{_LEVEL_LETTER.get(record.levelno, 'I')}{t.tm_mon:02d}{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d} {os.getpid():7d} "
                f"{record.filename}:{record.lineno}] ")
        text = head + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbosity: int = 0, stream=None) -> None:
    """-v levels as klog's: 0 warnings and the main events, 2+ the control plane's steps, 4+
    every sync."""
    level = logging.DEBUG if verbosity >= 4 else logging.INFO if verbosity >= 0 else logging.WARNING
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KlogFormatter())
    root = logging.getLogger("dataplane")
    root.handlers[:] = [handler]
    root.setLevel(level)
