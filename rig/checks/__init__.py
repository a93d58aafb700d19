"""Checks users write themselves: plain pytest files with fixtures for the device under test.

`plugin` is the pytest plugin (fixtures, options); `context` what a check knows about its
device and scenario; `run` runs a scenario's check files inside `rig run`; `suite` runs
any pytest suite in a subprocess and maps its end to the rig's exit codes (the built-in
smoke suite uses it too). Nothing here knows a product.
"""
