"""configs/prometheus.yml finds its targets through the dashboard's HTTP SD endpoint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "prometheus.yml"


def test_the_scrape_config_uses_the_dashboards_sd_endpoint() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    [job] = config["scrape_configs"]
    [sd] = job["http_sd_configs"]
    assert sd["url"] == "http://127.0.0.1:8081/sd/prometheus"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian prometheus)")
def test_promtool_accepts_it() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
