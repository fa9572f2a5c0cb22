"""End to end on loopback: `ray start --head` with token auth, `ray job submit`, dashboard REST API.

The same path a user takes on a real cluster (SPEC §1: `ray up`, then
`ray job submit ... -- python run_study.py run ...`), on one machine. Token auth is explicit for
every process (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH=<private file>; see
ray_cluster_helpers.py) and the test proves it is enforced.

The job under test is chosen by the single line ``JOB = ...`` below.
"""

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_cluster_helpers import LocalHead, running_head  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class JobSpec:
    working_dir: Path  # uploaded by `ray job submit --working-dir`; the job's cwd
    entrypoint: list[str]
    marker: str | None  # a string the job's logs must contain; None: only SUCCEEDED counts
    timeout_s: float  # bound on the wait for a terminal state


def tiny_ray_job(tmp_path: Path) -> JobSpec:
    """A driver that connects to the job's cluster, runs one remote task, prints a marker."""
    marker = f"AKD-JOB-OK-{uuid.uuid4().hex[:8]}"
    job_dir = tmp_path / "tiny_job"
    job_dir.mkdir()
    (job_dir / "tiny_job.py").write_text(
        f"""\
import os

import ray

ray.init()  # no address: the job supervisor points RAY_ADDRESS at this cluster


@ray.remote
def square(x):
    return x * x


assert ray.get(square.remote(7)) == 49
# auth=token shows the driver inherited token auth from the head's environment.
print("{marker}", "auth=" + os.environ.get("RAY_AUTH_MODE", "unset"), flush=True)
"""
    )
    return JobSpec(job_dir, ["python", "tiny_job.py"], marker + " auth=token", timeout_s=120)


def smoke_study_job(tmp_path: Path) -> JobSpec:
    """The real study CLI on the `smoke` preset with 2 search trials per cell (MNIST-1D, CPU,
    about a minute): the job's path, not the search, is under test."""
    return JobSpec(
        REPO,  # run_study.py lives at the repo root; .gitignore keeps .venv and runs/ out
        ["python", "run_study.py", "run", "--preset", "smoke", "--num-samples", "2", "--storage",
         str(tmp_path / "runs"), "--address", "auto"],  # the job's cluster, not a new local instance
        marker="study smoke finished",  # the CLI's last line of a finished study
        timeout_s=300,
    )


# The job under test. Switch to the real study by changing this one line:
#   JOB = smoke_study_job
JOB = smoke_study_job


@pytest.fixture(scope="module")
def ray_head():
    with running_head(num_cpus=2) as head:
        yield head


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_job_submit_with_token_auth(ray_head: LocalHead, tmp_path):
    job = JOB(tmp_path)
    submission_id = ray_head.submit_job(job.entrypoint, job.working_dir)

    # Auth is really on: no token -> 401, wrong token -> 403, our token -> 200.
    status, body = ray_head.request(f"/api/jobs/{submission_id}", auth=False)
    assert status == 401, (status, body)
    status, _ = ray_head.request(f"/api/jobs/{submission_id}", token="0" * 64)
    assert status == 403
    status, _ = ray_head.request(f"/api/jobs/{submission_id}")
    assert status == 200

    info = ray_head.wait_for_job(submission_id, timeout=job.timeout_s)
    logs = ray_head.job_logs(submission_id)
    assert info["status"] == "SUCCEEDED", f"{info}\n--- job logs ---\n{logs[-5000:]}"
    if job.marker is not None:
        assert job.marker in logs, logs[-5000:]
    status, _ = ray_head.request(f"/api/jobs/{submission_id}/logs", auth=False)
    assert status == 401
