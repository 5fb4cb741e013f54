"""The plugin's setting: where geoseg is (Processing → Options → Providers → geoseg)."""

from __future__ import annotations

from . import runner

PROVIDER = "geoseg"


def register() -> None:
    """Add the setting to Processing's options (once per provider load)."""
    from processing.core.ProcessingConfig import ProcessingConfig, Setting

    ProcessingConfig.addSetting(Setting(
        "geoseg", runner.SETTING,
        "geoseg executable, or the folder of its environment (venv or conda); empty: "
        "$GEOSEG_EXECUTABLE, else geoseg on PATH", "", valuetype=Setting.FILE))
    ProcessingConfig.readSettings()


def unregister() -> None:
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.removeSetting(runner.SETTING)


def configured_executable() -> str:
    """What the setting says ("" when unset, or when Processing's options are absent)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:
        return ""
    return str(ProcessingConfig.getSetting(runner.SETTING) or "")
