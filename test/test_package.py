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
