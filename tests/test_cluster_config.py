"""Offline validation of cluster.yaml (AWS) and cluster-onprem.yaml (local provider).

Uses Ray's own code, the same steps `ray up` takes before touching any cloud:
``prepare_config`` (merge the provider's defaults.yaml, fold setup_commands into
head/worker setup, fill per-node-type min/max workers) then ``validate_config`` (the
ray-schema.json check plus cross-field checks).

Both live in ``ray.autoscaler._private.util``: a PRIVATE API. The project pins
ray==2.60.0 (pyproject.toml) and these tests are written against that version's signatures:
``prepare_config(config: dict) -> dict`` and ``validate_config(config: dict) -> None``
(raises ``jsonschema.ValidationError`` / ``ValueError`` / ``RuntimeError``).

No cloud SDK and no network needed: for ``aws``, ``prepare_config`` only reads
``ray/autoscaler/aws/defaults.yaml``; boto3 is first used by ``bootstrap_config``
(key pair, subnets, security groups), which these tests never call. The ``offline``
fixture makes any socket connection fail so a future Ray that starts calling out is caught.
For ``local``, ``prepare_config`` replaces the node types with its single built-in type and
derives min/max workers from ``worker_ips``.

cluster.yaml runs the project image built from docker/Dockerfile (or, as its documented
fallback, Ray's published image with the project installed at node start). No docker engine
runs here, so the image itself is never built by these tests; its Dockerfile is read instead.
"""

import copy
import json
import re
import shlex
import socket
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]
DOCKERFILE = REPO / "docker" / "Dockerfile"
PROJECT_IMAGE = "annealing-kd"  # the repository name, under any registry, of docker/Dockerfile's image


@pytest.fixture
def offline(monkeypatch):
    """Fail loudly if config preparation ever tries to reach the network."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during config validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def load(name):
    with open(REPO / name) as f:
        return yaml.safe_load(f)


def prepared(name):
    return prepare_config(copy.deepcopy(load(name)))


def project_table():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pinned_ray_version():
    """The ray version pinned in pyproject.toml (``ray[...]==X``)."""
    deps = project_table()["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"ray(?:\[[^\]]*\])?==(\S+)", d))]
    assert len(pins) == 1, deps
    return pins[0]


def ray_base_image():
    """Ray's published image for the pinned version: -gpu for CUDA on the workers, py311 for the
    project's Python. (rayproject/ray-ml is not published after Ray 2.49.)"""
    return f"rayproject/ray:{pinned_ray_version()}-py311-gpu"


def is_project_image(image):
    return image.rpartition(":")[0].rpartition("/")[2] == PROJECT_IMAGE


def dockerfile_instructions():
    """(KEYWORD, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def start_commands(cfg, key):
    """The `ray start ...` lines of head_start_ray_commands or worker_start_ray_commands."""
    cmds = [c for c in cfg[key] if re.search(r"\bray start\b", c)]
    assert cmds, f"no `ray start` in {key}"
    return cmds


def env_assignments(cmd):
    """VAR=value prefixes directly before `ray start` in one shell command line."""
    words = shlex.split(cmd.split(";")[-1])
    env = {}
    for w in words:
        if w == "ray":
            break
        name, _, value = w.partition("=")
        env[name] = value
    return env


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_accepts_config(name, offline):
    cfg = prepared(name)
    validate_config(cfg)  # raises on any schema or cross-field error
    # Our explicit start commands must replace the provider defaults, not be merged away.
    assert not any("0.0.0.0" in c for c in cfg["head_start_ray_commands"])


def test_installed_ray_is_the_pinned_one():
    # Everything in this file (and both configs) is written against this version.
    assert ray.__version__ == pinned_ray_version()


@pytest.mark.parametrize("name", CONFIGS)
def test_token_auth_on_every_ray_start(name):
    cfg = prepared(name)
    mounts = {k.replace("$HOME", "~") for k in cfg["file_mounts"]}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in start_commands(cfg, key):
            env = env_assignments(cmd)
            assert env.get("RAY_AUTH_MODE") == "token", cmd
            token_path = env.get("RAY_AUTH_TOKEN_PATH", "")
            # The token file the node reads is one the launcher copies onto it.
            assert token_path.replace("$HOME", "~") in mounts, (token_path, mounts)


@pytest.mark.parametrize("name", CONFIGS)
def test_start_commands(name):
    cfg = prepared(name)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert cfg[key][0] == "ray stop"
    (head,) = start_commands(cfg, "head_start_ray_commands")
    head_args = shlex.split(head.split(";")[-1])
    assert "--head" in head_args
    assert "--port=6379" in head_args
    assert "--dashboard-host=127.0.0.1" in head_args  # loopback; `ray dashboard` tunnels to it
    assert "--metrics-export-port=8080" in head_args
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_args
    (worker,) = start_commands(cfg, "worker_start_ray_commands")
    worker_args = shlex.split(worker.split(";")[-1])
    assert "--address=$RAY_HEAD_IP:6379" in worker_args
    assert "--metrics-export-port=8080" in worker_args


@pytest.mark.parametrize("name", CONFIGS)
def test_every_node_has_the_project_and_shared_storage(name):
    cfg = prepared(name)
    mounts = cfg["file_mounts"]
    image = cfg.get("docker", {}).get("image", "")
    # prepare_config folds setup_commands into head_ and worker_setup_commands.
    for key in ("head_setup_commands", "worker_setup_commands"):
        if is_project_image(image):
            # The image has the project and its pins: a node start reinstalls none of them
            # (boto3, which the head's autoscaler needs, is not in the image).
            installs = [c for c in cfg[key] if re.search(r"\bpip install\b", c) and "boto3" not in c]
            assert not installs, installs
            assert "." not in mounts.values(), mounts
        else:
            (project_dir,) = [remote for remote, local in mounts.items() if local == "."]
            assert any(
                re.search(r"pip install .*-e " + re.escape(project_dir) + r"\b", c) for c in cfg[key]
            ), cfg[key]
        # The provider default (an unpinned nightly wheel) must not leak in.
        assert not any("ray-wheels" in c for c in cfg[key])
    assert any("/mnt/shared" in c and "mount" in c for c in cfg["initialization_commands"])
    assert ".venv" in cfg["rsync_exclude"]


def test_aws_node_types():
    cfg = prepared("cluster.yaml")
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    # The head takes no trials: each asks for cpus_per_trial >= 1 CPUs (the study refuses less,
    # tests/test_bad_inputs.py), and GPU: 0 keeps GPU tasks off it. Explicit keys: without
    # them `ray start` would advertise the CPUs it detects.
    assert head["resources"].get("CPU") == 0, head["resources"]
    assert head["resources"].get("GPU") == 0, head["resources"]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu_workers = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no GPU worker type"
    for name, nt in types.items():
        for res, amount in nt["resources"].items():
            # bool is an int subclass; `GPU: true` must not sneak through.
            assert type(amount) is int, (name, res, amount)
    for name, nt in workers.items():
        assert nt["min_workers"] == 0, name  # scale from zero: idle clusters cost nothing
        assert 1 <= nt["max_workers"] <= cfg["max_workers"], name


def test_aws_security_group_is_user_managed():
    """Ray's auto-created group opens SSH to 0.0.0.0/0; every node type must name its own."""
    cfg = prepared("cluster.yaml")
    for name, nt in cfg["available_node_types"].items():
        assert nt["node_config"].get("SecurityGroupIds"), name
    assert "security_group" not in cfg["provider"]
    assert "0.0.0.0/0" not in json.dumps(cfg)


def test_aws_image_is_pinned_and_published():
    cfg = prepared("cluster.yaml")
    docker = cfg["docker"]
    images = [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]
    images += [
        nt["docker"]["worker_image"]
        for nt in cfg["available_node_types"].values()
        if "worker_image" in nt.get("docker", {})
    ]
    assert images
    for image in images:
        assert "ray-ml" not in image, image  # not published after Ray 2.49: `ray up` fails at the pull
        repo, sep, tag = image.rpartition(":")
        assert sep and tag != "latest" and "nightly" not in tag, image
        if is_project_image(image):
            # Built from docker/Dockerfile (test_project_image_dockerfile checks its base).
            assert tag == project_table()["version"], image
        else:
            assert image == ray_base_image(), image
    # The bind mount that makes /mnt/shared (on the host) visible inside the container.
    assert any("/mnt/shared:/mnt/shared" in opt for opt in docker["run_options"])
    # The head's autoscaler needs boto3; Ray's default head_setup_commands (replaced) had it.
    assert any("boto3" in c for c in cfg["head_setup_commands"])


def test_project_image_dockerfile():
    steps = dockerfile_instructions()
    # One stage, on Ray's published image of the pinned version, so the image's Ray is the client's.
    assert [args for keyword, args in steps if keyword == "FROM"] == [ray_base_image()]
    copied = {i: args.split()[-2] for i, (keyword, args) in enumerate(steps) if keyword == "COPY"}
    installs = [(i, args) for i, (keyword, args) in enumerate(steps)
                if keyword == "RUN" and re.search(r"\bpip install\b", args)]
    tree = next(i for i, source in copied.items() if source == ".")
    deps = next(i for i, source in copied.items() if source == "pyproject.toml")
    # Dependencies from pyproject.toml alone before the tree arrives: code edits reuse that layer.
    assert any(deps < i < tree for i, _ in installs), steps
    # Then the copied project itself, a regular install (editable would point into the build tree).
    project = [args for i, args in installs if i > tree and re.search(r"\s\.$", args)]
    assert project, steps
    assert not any(re.search(r"\s(-e|--editable)\b", args) for args in project), project


@pytest.mark.parametrize("name", CONFIGS)
def test_no_unsupported_storage_or_discontinued_image(name):
    """Not even in comments: both would send users into a failure."""
    text = (REPO / name).read_text()
    assert "s3://" not in text  # the study refuses object-store --storage (study/config.py)
    assert "ray-ml:" not in text  # no image tag of the discontinued ray-ml


def test_onprem_provider():
    raw = load("cluster-onprem.yaml")
    assert raw["provider"]["type"] == "local"
    assert "available_node_types" not in raw  # the local provider refuses them
    cfg = prepare_config(copy.deepcopy(raw))
    assert cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]
    (node_type,) = cfg["available_node_types"].values()
    assert node_type["max_workers"] == len(raw["provider"]["worker_ips"])


# Negative tests: prove the validator really runs on these configs.


def test_fractional_gpu_rejected():
    cfg = prepared("cluster.yaml")
    bad = copy.deepcopy(cfg)
    worker = next(k for k in bad["available_node_types"] if k != bad["head_node_type"])
    bad["available_node_types"][worker]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError, match="0.5"):
        validate_config(bad)


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_top_level_key_rejected(name):
    raw = load(name)
    raw["max_worker"] = 3  # a typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(raw))
