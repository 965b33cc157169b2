"""Build the test workload image once per machine (no registry is reachable here)."""

from __future__ import annotations

import subprocess

from tests.support.procs import ROOT

BUILD_SCRIPT = ROOT / "configs" / "images" / "echo" / "build.sh"


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def ensure_echo_image() -> None:
    if all(image_exists(f"shoal-test/echo:{tag}") for tag in ("v1", "v2")):
        return
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
