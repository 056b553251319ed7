"""ament_python build of robostral_agent: nodes, CLI, launch files, configs and the model."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'robostral_agent'
SHARE = os.path.join('share', PACKAGE)


def tree(top: str) -> list[tuple[str, list[str]]]:
    """Every file under `top`, grouped by directory, for `data_files` (keeps the layout)."""
    entries = []
    for dirpath, _dirnames, filenames in os.walk(top):
        files = [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith('.')]
        if files:
            entries.append((os.path.join(SHARE, dirpath), files))
    return entries


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'tools']),
    package_data={PACKAGE: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (SHARE, ['package.xml']),
        (os.path.join(SHARE, 'launch'), glob('launch/*.launch.py')),
        (os.path.join(SHARE, 'config'), glob('config/*.yaml')),
        (os.path.join(SHARE, 'worlds'), glob('worlds/*.sdf')),
        *tree('models'),
    ],
    install_requires=['setuptools', 'numpy', 'scipy', 'pyyaml'],
    extras_require={
        'test': ['pytest', 'pytest-timeout', 'hypothesis', 'ruff', 'colcon-common-extensions'],
    },
    zip_safe=False,
    maintainer='Robostral Agent team',
    maintainer_email='team@robostral.dev',
    description='VLM agent, fail-closed safety supervisor and MuJoCo work cell for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'agent_node = robostral_agent.ros.agent_node:main',
            'supervisor_node = robostral_agent.ros.supervisor_node:main',
            'robostral = robostral_agent.cli:main',
            'sim_node = robostral_agent.ros.sim_node:main',
        ],
    },
)
