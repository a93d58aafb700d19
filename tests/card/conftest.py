"""Load the card builders of fixtures/provision/cards.py once, as `provision_cards`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "provision_cards" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "provision_cards", Path(__file__).parent / "fixtures" / "provision" / "cards.py"
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["provision_cards"] = _module
    _spec.loader.exec_module(_module)
