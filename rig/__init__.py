"""rig: release-testing rig for Raspberry Pi images."""

__version__ = "0.1.0"
