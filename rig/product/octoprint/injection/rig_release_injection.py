"""Release injection for the release-testing rig (runs inside OctoPrint on the device).

Points the software-update plugin's GitHub release check at the rig's release feed,
so the device is offered the release under test before it is published. The feed
URL comes from this plugin's settings (plugins.rig_release_injection.feed_url),
written by the rig's prepare step. Installed into ~/.octoprint/plugins/.
"""

import octoprint.plugin

__plugin_name__ = "Rig release injection"
__plugin_version__ = "1"
__plugin_description__ = "Release feed of the release-testing rig (test devices only)"
__plugin_pythoncompat__ = ">=3.7,<4"


class RigReleaseInjection(octoprint.plugin.SettingsPlugin):
    def get_settings_defaults(self):
        return {"feed_url": None}

    def initialize(self):
        url = self._settings.get(["feed_url"])
        if not url:
            self._logger.warning("No feed_url configured, release check left alone")
            return
        from octoprint import __version__ as version
        from octoprint.plugins.softwareupdate.version_checks import github_release

        series = 1 if version.split(".")[0] in ("0", "1") else 2
        github_release.RELEASE_URL = (
            url.rstrip("/") + "/releases/{user}/{repo}?series=" + str(series)
        )
        self._logger.info("GitHub release check now asks %s", github_release.RELEASE_URL)


__plugin_implementation__ = RigReleaseInjection()
