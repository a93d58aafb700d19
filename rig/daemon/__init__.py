"""`rig serve`: the flash-host daemon (webhooks in, tested images out, approval to publish)."""
