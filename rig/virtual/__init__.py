"""The virtual rig: emulated hardware (hw) and virtual Pis for the layers above."""
