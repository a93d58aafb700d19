"""The OctoPrint product profile."""
