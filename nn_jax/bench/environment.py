"""What a result was measured on: device, versions, host and load, recorded with every report."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

import jax

from nn_jax.bench.registry import FRAMEWORK_PACKAGES

VERSIONED = ("nn_jax", "optax", "flax", "equinox", "haiku", "torch")
"""The packages whose versions a report records (``None`` when not installed)."""


def version(module: str) -> str | None:
    """``module.__version__`` (``"unknown"`` without one), or ``None`` if not installed."""
    if importlib.util.find_spec(module) is None:
        return None
    return str(getattr(importlib.import_module(module), "__version__", "unknown"))


def framework_available(framework: str) -> bool:
    """Whether ``framework``'s package is importable (nn_jax and raw JAX always are)."""
    package = FRAMEWORK_PACKAGES.get(framework)
    return package is None or importlib.util.find_spec(package) is not None


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Device, versions and host, recorded with every result."""
    import jaxlib

    device = jax.devices()[0]
    return {
        "device": str(device),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "versions": {name: version(name) for name in VERSIONED},
        "host": {
            "node": platform.node(),
            "system": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
        },
        "load_average_start": list(os.getloadavg()),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],  # no machine paths in results
    }


__all__ = ["VERSIONED", "cpu_model", "environment", "framework_available", "version"]
