"""Agent + safety supervisor for a real (or simulated) cell.

    ros2 launch robostral_agent robostral.launch.py namespace:=cell1 \
        color_topic:=/camera/camera/color/image_raw model_path:=/opt/models/paligemma2

Each node runs in its own process: a crashing model cannot take the supervisor with it.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'robostral_agent'


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument(
            'namespace', default_value='', description='Namespace for every node and topic.'
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
            description='Safety policy (YAML, version 1) the supervisor enforces.',
        ),
        DeclareLaunchArgument(
            'model_path',
            default_value=PathJoinSubstitution([share, 'models', 'robostral-tiny']),
            description='Local model directory (transformers format + robostral.yaml).',
        ),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false', description='Use /clock for ROS time.'
        ),
        DeclareLaunchArgument(
            'color_topic',
            default_value='camera/color/image_raw',
            description='Colour image topic of your camera (remapped onto the contract name).',
        ),
        DeclareLaunchArgument(
            'depth_topic',
            default_value='camera/aligned_depth_to_color/image_raw',
            description='Depth image registered to colour (32FC1 metres or 16UC1 mm).',
        ),
        DeclareLaunchArgument(
            'camera_info_topic',
            default_value='camera/color/camera_info',
            description='CameraInfo of the colour stream.',
        ),
    ]
    use_sim_time = {'use_sim_time': LaunchConfiguration('use_sim_time')}
    camera_remaps = [
        ('camera/color/image_raw', LaunchConfiguration('color_topic')),
        ('camera/aligned_depth_to_color/image_raw', LaunchConfiguration('depth_topic')),
        ('camera/color/camera_info', LaunchConfiguration('camera_info_topic')),
    ]
    nodes = GroupAction(
        [
            PushRosNamespace(LaunchConfiguration('namespace')),
            Node(
                package=PACKAGE,
                executable='supervisor_node',
                name='safety_supervisor',
                parameters=[
                    LaunchConfiguration('supervisor_params'),
                    {'policy_file': LaunchConfiguration('policy_file')},
                    use_sim_time,
                ],
                output='screen',
            ),
            Node(
                package=PACKAGE,
                executable='agent_node',
                name='robostral_agent',
                parameters=[
                    LaunchConfiguration('agent_params'),
                    {'model_path': LaunchConfiguration('model_path')},
                    use_sim_time,
                ],
                remappings=camera_remaps,
                output='screen',
            ),
        ]
    )
    return LaunchDescription([*args, nodes])
