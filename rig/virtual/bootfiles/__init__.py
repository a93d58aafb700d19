"""Interpreters for the files that configure a Pi's first boot, one per format.

Written from the formats' documentation, independent of the rig's provisioning
writer, and tested against hand-written fixtures: a writer bug must show up as
a virtual Pi that does not come up, never be mirrored by the reader.
"""


class BootFileError(ValueError):
    """A boot file the real Pi would reject (or a script that would fail)."""
