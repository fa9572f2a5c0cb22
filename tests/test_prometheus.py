"""The study's metrics and its Grafana dashboard, against a real Prometheus (SPEC §8).

The slow test does what the README's "Monitoring" section tells a user to do, on loopback:
`ray start --head --metrics-export-port` (tests/ray_cluster_helpers.py, token auth), Debian's
Prometheus started with the config Ray writes for it (its service discovery of every node's
export port; only the intervals shortened), the smoke study driven against the head. Then every
PromQL expression of the dashboard, and every variable query, is evaluated as Grafana would:
variables filled in, range queries over the time the study ran (its driver has exited by then,
so its gauges are only in Prometheus's history). Each must answer for the study and every one of
its cells, and the values must agree with the study's summary.csv.

The fast test drives StudyMetrics with fake trials and fake metrics: per-cell series only, and
what a trial contributed is gone when it ends.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_cluster_helpers import LOOPBACK, LocalHead, free_port, running_head  # noqa: E402

from study import metrics as study_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "monitoring" / "grafana" / "annealing-kd-dashboard.json"
PROMETHEUS = Path("/usr/bin/prometheus")
STUDY = "prom-smoke"
# Ray exports every second (its floor) and drops a gauge two exports after it was last set (the
# driver's exit included; counters stay). Scraped twice as often, the study's last values are in
# Prometheus several times over.
REPORT_MS, SCRAPE = 1000, "500ms"
STEP_S = 0.25  # range queries see every sample


# ----------------------------------------------------------------------------- fast: the callback
class FakeMetric:
    """Records the value of every tag set, as Ray's exporter would export it."""

    def __init__(self, registry: dict, name: str, description: str = "", tag_keys: tuple = ()):
        self.tag_keys, self.values = tuple(tag_keys), {}
        registry[name] = self

    def _key(self, tags: dict) -> tuple:
        assert set(tags) == set(self.tag_keys), tags
        return tuple(sorted(tags.items()))

    def set(self, value, tags):
        self.values[self._key(tags)] = value

    def inc(self, value=1.0, tags=None):
        key = self._key(tags)
        self.values[key] = self.values.get(key, 0) + value


@pytest.fixture
def exported(monkeypatch):
    registry: dict[str, FakeMetric] = {}
    monkeypatch.setattr(study_metrics, "Gauge", lambda *a, **k: FakeMetric(registry, *a, **k))
    monkeypatch.setattr(study_metrics, "Counter", lambda *a, **k: FakeMetric(registry, *a, **k))
    return registry


def value(registry, name, cell=None, **tags):
    key = {"study": "s", **({"cell": cell} if cell else {}), **tags}
    return registry[name].values.get(tuple(sorted(key.items())))


def test_study_metrics_are_per_cell_and_forget_ended_trials(exported):
    cb = study_metrics.StudyMetrics("s", slots=4)
    trial = {n: SimpleNamespace(trial_id=n, config={"cell": cell}, last_result={})
             for n, cell in (("a", "c1"), ("b", "c1"), ("c", "c2"), ("d", "c2"), ("e", "c2"))}
    start = lambda n: cb.on_trial_start(iteration=0, trials=[], trial=trial[n])  # noqa: E731
    report = lambda n, **r: cb.on_trial_result(iteration=0, trials=[], trial=trial[n], result=r)  # noqa: E731

    def end(n, **last):
        trial[n].last_result = last
        cb.on_trial_complete(iteration=0, trials=[], trial=trial[n])

    def temperatures(cell):  # mean, max
        return value(exported, "kd_cell_temperature_mean", cell), value(exported, "kd_cell_temperature_max", cell)

    start("a")
    assert value(exported, "kd_trials_started", "c1") == 1 and value(exported, "kd_study_utilisation") == 0.25
    assert value(exported, "kd_cell_running_trials", "c1", phase="1") == 1
    report("a", phase=1, T=3.0, best_val_acc=50.0)
    start("b")
    report("b", phase=1, T=1.0, best_val_acc=40.0)
    assert temperatures("c1") == (2, 3)
    report("a", phase=2, T=math.nan, best_val_acc=60.0)  # Annealing-KD's phase 2: no temperature
    assert value(exported, "kd_cell_running_trials", "c1", phase="2") == 1
    assert value(exported, "kd_cell_running_trials", "c1", phase="1") == 1
    assert temperatures("c1") == (1, 1)
    assert value(exported, "kd_cell_best_val_acc", "c1") == 60
    start("a")  # Tune retries a trial: started once
    assert value(exported, "kd_trials_started", "c1") == 2
    end("a", finished=True, phase=2)
    assert value(exported, "kd_trials_completed", "c1") == 1
    assert value(exported, "kd_cell_running_trials", "c1", phase="2") == 0  # zeroed, not left at 1
    end("b", finished=False)
    assert value(exported, "kd_trials_pruned", "c1") == 1
    assert value(exported, "kd_cell_running_trials", "c1", phase="1") == 0
    assert temperatures("c1") == (0, 0)
    assert value(exported, "kd_study_utilisation") == 0
    assert value(exported, "kd_cell_best_val_acc", "c1") == 60  # the best so far stays

    end("c", finished=True)  # Tune also "completes" trials that never started
    assert value(exported, "kd_trials_completed", "c2") is None and value(exported, "kd_trials_started", "c2") is None
    start("d")
    cb.on_trial_error(iteration=0, trials=[], trial=trial["d"])
    start("e")
    report("e", phase=1, T=2.0)
    report("e", best_val_acc=10.0, diverged=True)  # the trainable's diverged report: no phase, no T
    assert value(exported, "kd_cell_temperature_max", "c2") == 2
    end("e", diverged=True, finished=False)
    assert value(exported, "kd_trials_failed", "c2") == 2
    assert value(exported, "kd_cell_running_trials", "c2", phase="1") == 0

    # Ray forgets a gauge not set again for two export intervals: Tune's loop sets them all again
    for name in ("kd_cell_best_val_acc", "kd_cell_running_trials", "kd_cell_temperature_max", "kd_study_utilisation"):
        exported[name].values.clear()
    cb.on_step_end(iteration=0, trials=[])
    assert value(exported, "kd_cell_best_val_acc", "c1") is None  # not before REFRESH_SECONDS
    cb.refreshed -= study_metrics.REFRESH_SECONDS
    cb.on_step_end(iteration=0, trials=[])
    assert value(exported, "kd_cell_best_val_acc", "c1") == 60 and value(exported, "kd_study_utilisation") == 0
    assert value(exported, "kd_cell_running_trials", "c1", phase="2") == 0
    assert value(exported, "kd_cell_temperature_max", "c2") == 0

    # 500 more trials: still the series of two cells (4 counters, best, 2 phases, mean and max T)
    # and the study's utilisation
    for i in range(500):
        n = f"t{i}"
        trial[n] = SimpleNamespace(trial_id=n, config={"cell": f"c{1 + i % 2}"}, last_result={})
        start(n)
        report(n, phase=1 + i % 2, T=float(i), best_val_acc=float(i % 7))
        end(n, finished=bool(i % 3), diverged=i % 5 == 0)
    assert sum(len(m.values) for m in exported.values()) == 2 * 9 + 1



def test_a_resumed_study_shows_each_cells_best_on_record_from_the_start(exported):
    cb = study_metrics.StudyMetrics("s", slots=2, best_on_record={"c1": 70.0, "c2": 55.0})
    assert value(exported, "kd_cell_best_val_acc", "c1") == 70 and value(exported, "kd_cell_best_val_acc", "c2") == 55
    assert value(exported, "kd_cell_running_trials", "c1", phase="1") == 0
    trial = SimpleNamespace(trial_id="a", config={"cell": "c1"}, last_result={})
    cb.on_trial_start(iteration=0, trials=[], trial=trial)
    cb.on_trial_result(iteration=0, trials=[], trial=trial, result={"phase": 1, "best_val_acc": 65.0})
    assert value(exported, "kd_cell_best_val_acc", "c1") == 70  # below the past best: not the cell's best
    cb.on_trial_result(iteration=0, trials=[], trial=trial, result={"phase": 1, "best_val_acc": 72.5})
    assert value(exported, "kd_cell_best_val_acc", "c1") == 72.5
    exported["kd_cell_best_val_acc"].values.clear()
    cb.refreshed -= study_metrics.REFRESH_SECONDS
    cb.on_step_end(iteration=0, trials=[])  # a cell no trial of this session has touched is refreshed too
    assert value(exported, "kd_cell_best_val_acc", "c2") == 55

# ----------------------------------------------------------------------------- slow: Prometheus
def http_json(url: str, timeout: float = 10.0) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as error:  # Prometheus says what was wrong with the query
        return json.loads(error.read().decode())


class Prometheus:
    def __init__(self, port: int, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = f"http://{LOOPBACK}:{port}", proc, log

    def api(self, path: str, **params) -> dict:
        answer = http_json(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}")
        assert answer["status"] == "success", answer
        return answer["data"]

    def wait(self, what: str, check, timeout: float):
        """Polls `check()` until it returns something true; fails with the last answer."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last:
                    return last
            except OSError as error:  # not listening yet
                last = repr(error)
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        pytest.fail(f"{what}: not after {timeout:.0f}s; last answer {last}\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ray_head():
    with running_head(num_cpus=2, extra_env={"RAY_metrics_report_interval_ms": str(REPORT_MS)}) as head:
        yield head


@pytest.fixture(scope="module")
def prometheus(ray_head: LocalHead, tmp_path_factory):
    """Prometheus on a free port, with Ray's generated config (the README's command) and a
    storage folder of its own."""
    folder = tmp_path_factory.mktemp("prometheus")
    ray_config = ray_head.temp_dir / "session_latest" / "metrics" / "prometheus" / "prometheus.yml"
    deadline = time.monotonic() + 60
    while not ray_config.is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
    config = yaml.safe_load(ray_config.read_text())
    config["global"] = {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE, "scrape_timeout": SCRAPE}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), folder / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = Prometheus(port, proc, log)
    try:
        # scraping the head's metrics export port, found through Ray's service discovery file
        server.wait("Prometheus scraping the Ray head", lambda: [
            t for t in server.api("targets")["activeTargets"]
            if t["health"] == "up" and t["scrapeUrl"].endswith(f":{ray_head.metrics_port}/metrics")], timeout=120)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def dashboard_queries() -> tuple[list[dict], list[dict]]:
    """The dashboard's targets (each with its panel's title) and its query variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    targets = [{**t, "panel": p["title"]} for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return targets, variables


def fill_in(expr: str) -> str:
    """Grafana's variables, as a user who picked this study and all its cells has them."""
    filled = expr.replace("$study", STUDY).replace("$cell", ".+")  # the name, as a regex, matches itself
    assert "$" not in filled, f"a variable the test does not know: {expr}"
    return filled


def grouping(expr: str) -> set[str]:
    """The labels an expression keeps: its `by (...)` clauses, which must agree (every
    expression aggregates Ray's own labels away: WorkerId, SessionName, NodeAddress...)."""
    groups = re.findall(r"\bby \(([^)]*)\)", expr)
    clauses = {frozenset(label.strip() for label in group.split(",")) for group in groups}
    assert len(clauses) == 1, f"{expr}: by-clauses {clauses}"
    return set(next(iter(clauses)))


def check_counter(outcome):
    def check(series, summary):
        rows = summary if outcome is None else summary[summary.status == outcome]
        expected = rows.groupby("cell").size().reindex(summary.cell.unique(), fill_value=0).to_dict()
        assert {s["cell"]: s["last"] for s in series} == expected
    return check


def check_pruning_rate(series, summary):
    expected = (summary.status == "pruned").groupby(summary.cell).mean().to_dict()
    assert {s["cell"]: s["last"] for s in series} == pytest.approx(expected)


def check_best(series, summary):
    assert all(s["values"] == sorted(s["values"]) for s in series), "the best so far went down"
    best = summary.groupby("cell").best_val_acc.max().to_dict()
    assert {s["cell"]: s["last"] for s in series} == pytest.approx(best)


def check_running(series, summary):
    assert max(s["max"] for s in series) >= 1, "no running trial seen"
    assert {s["phase"] for s in series} <= {"1", "2"}
    assert all(s["last"] == 0 for s in series), "a finished trial left its count behind"
    two_phases = {s["cell"] for s in series if s["phase"] == "2" and s["max"] >= 1}
    assert all(cell.endswith("-annealing") for cell in two_phases)


def check_temperature(series, summary):
    # A smoke trial's temperature schedule lasts less than a second: seen or not, by chance (the
    # fast test checks the values)
    assert all(s["last"] == 0 for s in series), "a finished trial left its temperature behind"
    assert all(min(s["values"]) >= 0 for s in series)
    assert all(s["max"] == 0 for s in series if s["cell"].endswith("-ce")), "CE has no temperature"


def check_utilisation(series, summary):
    (study,) = series
    assert 0 < study["max"] <= 1 and study["last"] == 0


# Per target refId: what its values must be (counters: their last value; gauges: their history).
VALUE_CHECKS = {
    "started": check_counter(None), "completed": check_counter("completed"), "pruned": check_counter("pruned"),
    "failed": check_counter("failed"), "pruning_rate": check_pruning_rate, "best_val": check_best,
    "running": check_running, "T_mean": check_temperature, "T_max": check_temperature,
    "utilisation": check_utilisation,
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not PROMETHEUS.is_file(), reason=f"{PROMETHEUS} not found: Debian's prometheus package is not "
                                                     f"installed (.ci/run installs it as root)")
def test_every_dashboard_query_answers_for_a_real_study(ray_head: LocalHead, prometheus: Prometheus, tmp_path):
    targets, variables = dashboard_queries()
    assert targets and variables
    assert set(VALUE_CHECKS) <= {t["refId"] for t in targets}, "a checked target is gone from the dashboard"
    assert all(t["datasource"]["uid"] == "${datasource}" for t in targets)  # the data source is the user's pick

    started = time.time()
    run = subprocess.run(
        [sys.executable, "run_study.py", "run", "--preset", "smoke", "--num-samples", "2", "--storage",
         str(tmp_path / "runs"), "--name", STUDY, "--address", ray_head.gcs_address],
        cwd=REPO, env=ray_head.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    summary = pd.read_csv(tmp_path / "runs" / STUDY / "summary.csv")

    # The counters stay exported after the driver exited: once they show every trial, Prometheus
    # has scraped the study's last values.
    expected = summary.groupby("cell").size().to_dict()
    prometheus.wait("the study's final counts in Prometheus", lambda: {
        r["metric"]["cell"]: int(float(r["value"][1])) for r in prometheus.api(
            "query", query=f'sum by (cell) (ray_kd_trials_started_total{{study="{STUDY}"}})')["result"]} == expected,
        timeout=120)
    check_dashboard(prometheus, summary, start=started - 5, end=time.time())


def check_dashboard(prometheus: Prometheus, summary: pd.DataFrame, start: float, end: float) -> None:
    """Every variable query and every target of the dashboard over [start, end]."""
    targets, variables = dashboard_queries()
    cells = set(summary.cell)
    choices = {"study": {STUDY}, "cell": cells}  # what each variable must offer
    assert {v["name"] for v in variables} == set(choices)
    for variable in variables:
        selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"]).groups()
        values = set(prometheus.api(f"label/{label}/values", **{"match[]": fill_in(selector)}, start=start, end=end))
        assert values == choices[variable["name"]], f"variable {variable['name']}: {variable['query']['query']}"

    for target in targets:
        expr, name = fill_in(target["expr"]), f"{target['panel']} / {target['refId']}"
        result = prometheus.api("query_range", query=expr, start=start, end=end, step=STEP_S)
        assert result["resultType"] == "matrix" and result["result"], f"{name}: no data for {expr}"
        labels = grouping(expr)
        assert "study" in labels, f"{name}: not by study: {expr}"
        series = []
        for r in result["result"]:
            assert set(r["metric"]) == labels and r["metric"]["study"] == STUDY, f"{name}: {r['metric']}"
            values = [float(v) for _, v in r["values"]]
            assert all(math.isfinite(v) for v in values), f"{name}: {r['metric']} {values}"
            series.append({**r["metric"], "values": values, "last": values[-1], "max": max(values)})
        if "cell" in labels:
            assert {s["cell"] for s in series} == cells, f"{name}: cells {sorted(s['cell'] for s in series)}"
        if target["refId"] in VALUE_CHECKS:
            VALUE_CHECKS[target["refId"]](series, summary)
