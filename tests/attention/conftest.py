"""Make the attention_xla plugin importable when it is not pip-installed (a source checkout)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PLUGIN_ROOT = Path(__file__).resolve().parents[2] / "plugins" / "attention_xla"

if importlib.util.find_spec("esurge_attention_xla") is None and _PLUGIN_ROOT.is_dir():
    sys.path.insert(0, str(_PLUGIN_ROOT))
