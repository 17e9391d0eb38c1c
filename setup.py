"""ros_fer: installable both with pip (console command `ros-fer`) and with colcon (ament_python)."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "ros_fer"
HERE = Path(__file__).parent


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `folder` under share/ros_fer/, keeping sub-folders."""
    entries: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(HERE)
            entries.setdefault(f"share/{PACKAGE}/{rel.parent}", []).append(str(rel))
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("config"),
        *tree("launch"),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "safetensors", "torch", "open_clip_torch"],
    zip_safe=True,
    maintainer="ros_fer maintainers",
    description="Real-time emotion perception with vision-language models for ROS 2",
    license="Apache-2.0",
    entry_points={"console_scripts": ["ros-fer = ros_fer.cli:main", "fer_node = ros_fer.node:entry"]},
)
