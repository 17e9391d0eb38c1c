"""Start fer_node with config/fer.yaml, as a managed (lifecycle) node that this launch file configures and
activates (so the node's own autostart is off here).

ros2 launch ros_fer fer.launch.py image_topic:=/camera/color/image_raw [params_file:=/path/to/fer.yaml]
Pause and resume: ros2 lifecycle set /fer_node deactivate | activate
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("ros_fer"), "config", "fer.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="fer_node parameters"),
            DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera topic"),
            LifecycleNode(
                package="ros_fer",
                executable="fer_node",
                name="fer_node",
                namespace="",
                output="screen",
                parameters=[LaunchConfiguration("params_file"), {"autostart": False}],
                remappings=[("image", LaunchConfiguration("image_topic"))],
                autostart=True,  # launch_ros sends configure, then activate
            ),
        ]
    )
