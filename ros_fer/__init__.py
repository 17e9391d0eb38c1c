"""ros_fer: emotion perception with vision-language models; the ROS-free core."""

__version__ = "0.1.0"
