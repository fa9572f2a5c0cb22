"""The teacher goes where trials go: on a real two-node `ray.cluster_utils.Cluster` whose head
has no CPU (as cluster.yaml starts it), the study's teacher task trains on the worker, not on
the head where the driver runs. The task asks for no CPU (study/teachers.py says why), so
without a rule Ray places it on the driver's node."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DRIVER = """
import json, ray
from pathlib import Path
from ray.util.state import list_tasks
from study.config import StudyConfig
from study.teachers import TeacherStage

ray.init(address={address!r}, log_to_driver=False)
exp_dir = Path({exp_dir!r})
smoke = StudyConfig.preset("smoke")
config = smoke.replace(train={{**smoke.train, "num_samples": 600, "val_size": 100, "teacher_epochs": 1}})
stage = TeacherStage(config, exp_dir, exp_dir / "store", log=lambda line: None)
stage.start()
ray.get(stage.refs["teacher"])
(task,) = list_tasks(filters=[("func_or_class_name", "=", "prepare_role")], detail=True)
print(json.dumps({{"ran_on": task.node_id, "head": ray.get_runtime_context().get_node_id(),
                   "ready": stage.ready("teacher")}}))
"""


def test_the_teacher_trains_on_a_worker_not_on_a_head_without_cpus(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": True,
                                      "dashboard_port": 0})  # the State API, to see where a task ran
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        run = subprocess.run([sys.executable, "-c", DRIVER.format(address=cluster.address, exp_dir=str(tmp_path))],
                             cwd=REPO, capture_output=True, text=True, timeout=400)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        placed = json.loads(run.stdout.strip().splitlines()[-1])
        assert placed["ready"] is True
        assert placed["ran_on"] == worker.node_id != placed["head"]
    finally:
        cluster.shutdown()
