"""Start fer_node with config/fer.yaml as a managed (lifecycle) node, and bring it to active.

ros2 launch ros_fer fer.launch.py image_topic:=/camera/color/image_raw [params_file:=/path/to/fer.yaml]
                                  [namespace:=robot1] [use_sim_time:=true]
Pause and resume: ros2 lifecycle set /fer_node deactivate | activate   (/<namespace>/fer_node with a namespace)

One file for every ROS 2 distribution (Humble, Jazzy, Kilted, Rolling, any patch release): the transitions
are driven by launch events that every launch_ros has, not by LifecycleNode's `autostart` keyword, which
Humble and Jazzy before 0.26.7 lack (and whose first version sent activate before a slow configure ended).
configure is requested once the process has started (launch_ros waits for the node's service); activate
only once configure has ended in `inactive`. A failed configure is said once and not retried: the node's
own error line says why.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler
from launch.event_handlers import OnProcessStart
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("ros_fer"), "config", "fer.yaml"])
    node = LifecycleNode(
        package="ros_fer",
        executable="fer_node",
        name="fer_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            # the transitions come from this file, so the node's own autostart is off here
            {"autostart": False, "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)},
        ],
        remappings=[("image", LaunchConfiguration("image_topic"))],
    )

    def change(transition: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition))

    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="fer_node parameters"),
            DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera topic"),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of fer_node and its topics"),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="use the /clock topic's time"),
            node,
            RegisterEventHandler(
                OnProcessStart(target_action=node, on_start=[change(Transition.TRANSITION_CONFIGURE)])
            ),
            RegisterEventHandler(
                OnStateTransition(
                    target_lifecycle_node=node,
                    start_state="configuring",
                    goal_state="inactive",
                    entities=[change(Transition.TRANSITION_ACTIVATE)],
                )
            ),
            RegisterEventHandler(
                OnStateTransition(
                    target_lifecycle_node=node,
                    start_state="configuring",
                    goal_state="unconfigured",
                    entities=[
                        LogInfo(
                            msg="fer_node could not configure: its error line above says why. Nothing is retried; "
                            "fix the parameter it names, then restart this launch (or: ros2 lifecycle set "
                            "<node> configure)."
                        )
                    ],
                )
            ),
        ]
    )
