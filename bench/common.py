"""What every bench script prints first: the machine and the library versions."""

from __future__ import annotations

import os
import platform

import torch

import sgn


def machine_line() -> str:
    """One line naming the machine a table was measured on."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), {device}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); sgn {sgn.__version__}; Python {platform.python_version()}")
