"""scripts/uv_args.py: uv must read the package indexes pip reads, or `make install` on a
machine with local mirrors installs other wheels (or none)."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("uv_args", Path(__file__).parents[1] / "scripts" / "uv_args.py")
uv_args = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uv_args)

PIP_CONFIG = """global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/pip/constraints.txt'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/opt/wheels'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
user.index-url='https://mirror.example/simple'
"""


def test_every_index_setting_of_pip_is_passed_on_once():
    assert uv_args.uv_args(PIP_CONFIG) == [
        "--constraint", "/etc/pip/constraints.txt",
        "--extra-index-url", "file:///opt/a/simple", "--extra-index-url", "file:///opt/b/simple",
        "--find-links", "/opt/wheels",  # set in a file and in PIP_FIND_LINKS: once
        "--index-url", "https://mirror.example/simple",
        "--index-strategy", "unsafe-best-match"]


def test_no_settings_means_uv_defaults():
    assert uv_args.uv_args("") == []
    assert uv_args.uv_args(":env:.default-timeout='180'\n") == []
