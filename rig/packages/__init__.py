"""The package cache: a package index the rig serves its devices (PEP 503 / PEP 691).

It proxies the configured upstream index and keeps what it fetched (checked
against the upstream's hashes) and the wheels the devices built themselves, so a
Pi 3 neither downloads nor builds the same distribution twice. Product-neutral:
the profile points its device's pip at the index and hands back the wheels.
"""
