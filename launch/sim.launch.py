"""The whole loop in simulation: the MuJoCo work cell plus agent and supervisor.

    ros2 launch robostral_agent sim.launch.py scene_seed:=3

The simulator publishes the camera topics under the contract names, so no remapping is
needed; it executes approved plans only while the supervisor's safety_ok is fresh and true.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'robostral_agent'
FORWARDED = (
    'namespace', 'agent_params', 'supervisor_params', 'policy_file', 'model_path',
    'use_sim_time',
)  # fmt: skip


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument(
            'namespace', default_value='', description='Namespace for every node and topic.'
        ),
        DeclareLaunchArgument(
            'sim_params',
            default_value=PathJoinSubstitution([share, 'config', 'sim.yaml']),
            description='Parameter file of the simulator node.',
        ),
        DeclareLaunchArgument(
            'scene_seed',
            default_value='0',
            description='Seed of the random scene the simulator starts with.',
        ),
        DeclareLaunchArgument(
            'agent_params',
            default_value=PathJoinSubstitution([share, 'config', 'agent.yaml']),
            description='Parameter file of the agent node.',
        ),
        DeclareLaunchArgument(
            'supervisor_params',
            default_value=PathJoinSubstitution([share, 'config', 'supervisor.yaml']),
            description='Parameter file of the safety supervisor node.',
        ),
        DeclareLaunchArgument(
            'policy_file',
            default_value=PathJoinSubstitution([share, 'config', 'safety_policy.yaml']),
            description='Safety policy shared by the supervisor and the simulator checker.',
        ),
        DeclareLaunchArgument(
            'model_path',
            default_value=PathJoinSubstitution([share, 'models', 'robostral-tiny']),
            description='Local model directory (transformers format + robostral.yaml).',
        ),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false', description='Use /clock for ROS time.'
        ),
    ]
    core = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([share, 'launch', 'robostral.launch.py'])
        ),
        launch_arguments={name: LaunchConfiguration(name) for name in FORWARDED}.items(),
    )
    sim = GroupAction(
        [
            PushRosNamespace(LaunchConfiguration('namespace')),
            Node(
                package=PACKAGE,
                executable='sim_node',
                name='workcell_sim',
                parameters=[
                    LaunchConfiguration('sim_params'),
                    {
                        'scene_seed': LaunchConfiguration('scene_seed'),
                        'policy_file': LaunchConfiguration('policy_file'),
                        'use_sim_time': LaunchConfiguration('use_sim_time'),
                    },
                ],
                output='screen',
            ),
        ]
    )
    return LaunchDescription([*args, core, sim])
