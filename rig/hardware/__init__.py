"""Hardware layer: per-port power, SD muxes and the card's block device."""
