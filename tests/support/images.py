"""Build the test workload image once per machine (no registry is reachable here)."""

from __future__ import annotations

import subprocess

from tests.support.procs import ROOT

BUILD_SCRIPT = ROOT / "configs" / "images" / "echo" / "build.sh"


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


#: The image's ``shoal-test.echo.revision`` label this tree builds (its Dockerfile).
ECHO_REVISION = "2"


def image_revision(ref: str) -> str:
    out = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "-f",
            '{{index .Config.Labels "shoal-test.echo.revision"}}',
            ref,
        ],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def ensure_echo_image() -> None:
    """Build when missing or older than this tree's (the TCP echo and /bin/call came with 2)."""
    if all(image_revision(f"shoal-test/echo:{tag}") == ECHO_REVISION for tag in ("v1", "v2")):
        return
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
