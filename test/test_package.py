"""Packaging and architecture rules that a review would otherwise have to remember."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_imports_without_rclpy():
    code = (
        "import sys; sys.modules['rclpy'] = None\n"  # any import of rclpy now raises
        "import ros_fer.models, ros_fer.text_bank, ros_fer.prompts, ros_fer.labels, ros_fer.backbone, ros_fer.cli\n"
        "assert 'rclpy' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_core_does_not_import_training():
    offenders = [
        p
        for p in (ROOT / "ros_fer").rglob("*.py")
        if "import training" in p.read_text() or "from training" in p.read_text()
    ]
    assert offenders == []


def test_package_xml_is_ament_python_format_3():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "ros_fer"
    assert root.find("export/build_type").text == "ament_python"


def test_layout():
    for name in ("package.xml", "setup.py", "ros_fer", "launch", "config", "models", "training", "test", "README.md"):
        assert (ROOT / name).exists(), name


def test_ruff_clean():
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name, _, version = spec.partition("==")
            assert version, f"requirements/lock.txt: {line!r} is not pinned with =="
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_the_environment_is_exactly_the_lock():
    """Set-up installs requirements/lock.txt: every pinned package is installed at its pinned version, and
    every direct requirement of base.txt and ros.txt is in the lock."""
    from importlib.metadata import PackageNotFoundError, version

    pins = lock_pins()
    assert {"torch", "onnxruntime", "open-clip-torch", "ultralytics", "numpy", "ros-kilted-rclpy"} <= set(pins)
    wrong = {}
    for name, pinned in pins.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != pinned:
            wrong[name] = (pinned, have)
    assert wrong == {}, f"installed versions differ from requirements/lock.txt (pinned, installed): {wrong}"
    for req in ("base.txt", "ros.txt"):
        for line in (ROOT / "requirements" / req).read_text().splitlines():
            spec = line.split("#", 1)[0].strip()
            if spec:
                name = spec.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower().replace("_", "-")
                assert name in pins, f"requirements/{req}: {name} is missing from lock.txt; run `bash scripts/lock.sh`"


def test_the_robot_requirements_bring_no_second_rclpy_and_only_tested_versions():
    """requirements/robot.txt (pip beside an apt-installed ROS): no ROS wheel, every package in the lock, and
    every exact pin the lock's version; the ROS packages the node and launch file import are in package.xml."""
    from packaging.requirements import Requirement

    pins = lock_pins()
    lines = [ln.split("#", 1)[0].strip() for ln in (ROOT / "requirements" / "robot.txt").read_text().splitlines()]
    for line in filter(None, lines):
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert not name.startswith("ros-") and name not in ("rclpy", "colcon-common-extensions"), line
        assert name in pins, line
        assert req.specifier.contains(pins[name]), (line, pins[name])
    depends = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    import ast

    imported = set()
    for path in (ROOT / "ros_fer" / "node.py", ROOT / "launch" / "fer.launch.py"):
        tree = ast.parse(path.read_text())
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for n in ast.walk(t)}  # hri_msgs
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
    ros = {m for m in imported if m.endswith("_msgs") or m in ("rclpy", "launch", "launch_ros", "rcl_interfaces")}
    assert ros and ros <= depends, ros - depends
