"""`harness ui` beyond this machine: the UI has no authentication, and says so."""

from __future__ import annotations

import pytest

from experiments.ui.server import exposure_warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_warning(host: str) -> None:
    assert exposure_warning(host, 5000) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "myhost.example"])
def test_any_other_host_is_warned_about_in_one_line(host: str) -> None:
    line = exposure_warning(host, 5001)
    assert line is not None and "\n" not in line
    assert "has no authentication" in line and f"--host {host}" in line and "port 5001" in line
