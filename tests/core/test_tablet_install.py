"""The `vitalvagt` command on a tablet: only the core's and the gateway extra's libraries are
installed there. With the server's and the simulator's libraries made unimportable, the
command must still build its parser and run the gateway's commands; a component's CLI
module may import its heavy libraries only when one of its commands runs. (Issue 10: the
gateway process had grown from 64 to 94 MB by importing numpy and FastAPI for parsers.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_LIBRARIES = ("numpy", "psycopg", "psycopg_pool", "fastapi", "starlette", "uvicorn",
                    "apscheduler", "prometheus_client", "cryptography", "bumble", "jwt",
                    "pwdlib", "argon2", "holidays", "httpx")  # fmt: skip

BLOCK = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_LIBRARIES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on a tablet)", name=name)
        return None
sys.meta_path.insert(0, Blocked())
from vitalvagt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _vitalvagt(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VV_STATE_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", BLOCK, *argv], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


def test_the_gateway_commands_run_without_the_server_libraries(tmp_path: Path) -> None:
    for argv in (["--help"], ["gateway", "devices"], ["gateway", "notices"],
                 ["gateway", "decode", "--uuid", "2A37", "06", "48"]):  # fmt: skip
        r = _vitalvagt(tmp_path, *argv)
        assert r.returncode == 0, (argv, r.stderr[-2000:])
        assert "Traceback" not in r.stderr, (argv, r.stderr[-2000:])


def test_the_block_is_real(tmp_path: Path) -> None:
    """The same harness refuses a command that needs a server library: the test above
    would catch a parser that imports one."""
    r = _vitalvagt(tmp_path, "db", "migrate")
    assert r.returncode != 0
    assert "not on a tablet" in r.stderr
