"""The Grafana dashboard and the Prometheus alert rules in deploy/ load, and name only series the daemon
exports: the rules through Prometheus's own promtool (`check rules`, and `test rules` with the unit tests
beside them; scripts/promtool puts it in .venv/bin), the dashboard's JSON by its structure."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from conftest import REPO

from lando_ssh.metrics import Metrics

DASHBOARD = REPO / "deploy" / "grafana" / "lando-ssh.json"
RULES = REPO / "deploy" / "prometheus" / "lando-ssh-alerts.yml"
PROMTOOL = REPO / ".venv" / "bin" / "promtool"
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created")


def exported() -> set[str]:
    names = {family.name for family in Metrics().registry.collect()}
    return {name + suffix for name in names for suffix in SUFFIXES}


def series_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(lando_[a-z_]+)", expr))


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL.exists(), "promtool is missing: run scripts/promtool"
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_grafana_dashboard_is_a_dashboard_of_the_daemons_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "lando-ssh" and dashboard["uid"]
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    names = exported()
    for panel in dashboard["panels"]:
        assert panel["type"] == "timeseries" and panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            used = series_in(target["expr"])
            assert used and used <= names, (panel["title"], used - names)


def test_the_alert_rules_pass_promtools_check_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "lando-ssh-alerts.test.yml", cwd=RULES.parent)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_alert_rules_name_only_series_the_daemon_exports() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == {"LandoSshDown", "LandoQueueStuck", "LandoVmsLeaking", "LandoSweepFailing",
                                           "LandoVmBootFailures", "LandoJobsErroring"}
    names = exported()
    for rule in rules:
        assert series_in(rule["expr"]) <= names, (rule["alert"], series_in(rule["expr"]) - names)
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("warning", "critical")
