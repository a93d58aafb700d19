"""The virtual rig's hardware: shared state plus devices emulated below the drivers.

``state`` holds port power and mux sides (shared across processes); the
emulated USB devices (``usb``) and the USB-SD-Mux SCSI seam (``sdmux``) read and
write it, so the production drivers run unchanged against the virtual rig.
"""

from rig.virtual.hw.state import VirtualHardware, cleanup

__all__ = ["VirtualHardware", "cleanup"]
