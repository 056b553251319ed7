"""The reference work cell in Gazebo (gz sim) instead of MuJoCo, bridged to the contract names.

    ros2 launch robostral_agent gazebo.launch.py            # gz sim with its GUI
    ros2 launch robostral_agent gazebo.launch.py headless:=true

Needs a ROS 2 install with ``ros_gz_sim`` and ``ros_gz_bridge`` (Jazzy/Kilted with Gazebo
Harmonic or newer). ``worlds/workcell.sdf`` holds the same table, bins and camera pose as the
MuJoCo cell; the bridge publishes its RGB-D camera as ``camera/color/image_raw``,
``camera/aligned_depth_to_color/image_raw`` and ``camera/color/camera_info``, and the tool
marker's pose as ``robostral/tool_pose``, so the agent and the supervisor run unchanged
(start them with ``robostral.launch.py`` in the same namespace). The world has no arm:
replace the tool marker with your robot's tool pose, and execute approved plans with your
own controller.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'robostral_agent'
# Gazebo topic -> (ROS type, Gazebo type, the contract's topic name; relative = namespaced).
BRIDGED = (
    ('/workcell/camera/image', 'sensor_msgs/msg/Image', 'gz.msgs.Image',
     'camera/color/image_raw'),
    ('/workcell/camera/depth_image', 'sensor_msgs/msg/Image', 'gz.msgs.Image',
     'camera/aligned_depth_to_color/image_raw'),
    ('/workcell/camera/camera_info', 'sensor_msgs/msg/CameraInfo', 'gz.msgs.CameraInfo',
     'camera/color/camera_info'),
    ('/model/tool_marker/pose', 'geometry_msgs/msg/PoseStamped', 'gz.msgs.Pose',
     'robostral/tool_pose'),
    ('/clock', 'rosgraph_msgs/msg/Clock', 'gz.msgs.Clock', '/clock'),
)  # fmt: skip


def generate_launch_description() -> LaunchDescription:
    world = LaunchConfiguration('world')
    gz_launch = PathJoinSubstitution([FindPackageShare('ros_gz_sim'), 'launch/gz_sim.launch.py'])
    args = [
        DeclareLaunchArgument(
            'namespace', default_value='', description='Namespace of the bridged topics.'
        ),
        DeclareLaunchArgument(
            'world',
            default_value=PathJoinSubstitution(
                [FindPackageShare(PACKAGE), 'worlds', 'workcell.sdf']
            ),
            description='SDF world to run (the reference cell by default).',
        ),
        DeclareLaunchArgument(
            'headless',
            default_value='false',
            description='true: run the Gazebo server only, without its GUI (CI, remote hosts).',
        ),
    ]
    gazebo_gui = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(gz_launch),
        launch_arguments={'gz_args': [world, ' -r']}.items(),
        condition=UnlessCondition(LaunchConfiguration('headless')),
    )
    gazebo_server = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(gz_launch),
        launch_arguments={'gz_args': [world, ' -r -s --headless-rendering']}.items(),
        condition=IfCondition(LaunchConfiguration('headless')),
    )
    bridge = GroupAction(
        [
            PushRosNamespace(LaunchConfiguration('namespace')),
            Node(
                package='ros_gz_bridge',
                executable='parameter_bridge',
                name='workcell_bridge',
                arguments=[f'{gz}@{ros}[{gz_type}' for gz, ros, gz_type, _ in BRIDGED],
                remappings=[(gz, name) for gz, _, _, name in BRIDGED if gz != name],
                parameters=[{'use_sim_time': True}],
                output='screen',
            ),
        ]
    )
    return LaunchDescription([*args, gazebo_gui, gazebo_server, bridge])
