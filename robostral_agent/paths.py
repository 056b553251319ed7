"""Where the package's data (config/, launch/, models/, worlds/) lives at run time.

A source checkout (``make setup`` installs it editable) uses the files next to the code, so
edits take effect at once; a colcon or pip install uses ``share/robostral_agent`` found
through the ament index. No ROS import: ament_index_python is a plain Python package.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

PACKAGE = 'robostral_agent'


@cache
def share_dir() -> Path:
    """The directory that holds ``config/``, ``launch/``, ``models/`` and ``worlds/``."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / 'package.xml').is_file() and (checkout / 'config').is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, ValueError) as exc:
        raise FileNotFoundError(
            f'cannot find the {PACKAGE} share directory: not a source checkout, and the '
            f'ament index has no {PACKAGE} (is AMENT_PREFIX_PATH set?): {exc}'
        ) from exc


def config_file(name: str) -> Path:
    """A shipped configuration file, e.g. ``config_file('safety_policy.yaml')``."""
    return share_dir() / 'config' / name


def models_dir() -> Path:
    return share_dir() / 'models'
