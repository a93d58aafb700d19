"""The package cache tests' fixtures (package_rig.py)."""

from package_rig import packages, upstream, venv  # noqa: F401
