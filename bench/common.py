"""What the bench scripts share: the machine line every one prints first, and markdown tables."""

from __future__ import annotations

import os
import platform

import pandas as pd
import torch

import sgn


def machine_line() -> str:
    """One line naming the machine a table was measured on."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), {device}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); sgn {sgn.__version__}; Python {platform.python_version()}")


def markdown(table: pd.DataFrame) -> str:
    """A pipe table of ``table`` (its index too when named), without extra dependencies."""
    if any(table.index.names):
        table = table.reset_index()
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
