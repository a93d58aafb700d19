"""``octoprint-e2e``: OctoPrint's own Playwright suite against the device — not built yet.

The plan: from a configured checkout of OctoPrint (tests/playwright), run
``NO_SERVER=true PLAYWRIGHT_BASEURL=<device> npx playwright test
--grep-invert "@isolated|@csrf"`` with OCTOPRINT_USERNAME/PASSWORD and the same
Chromium, and merge its junit output into the scenario's results.
"""

from __future__ import annotations

from rig.errors import ConfigError
from rig.product.profile import ScenarioContext


def run_upstream(ctx: ScenarioContext) -> None:
    raise ConfigError(
        "the octoprint-e2e check is not implemented yet",
        where=f"scenario {ctx.scenario_id} checks",
        hint="use the smoke check (rig e2e URL runs it against any OctoPrint)",
    )
