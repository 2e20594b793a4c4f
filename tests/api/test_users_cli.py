"""`vitalvagt user add|list|disable` against the stack's database, and the user logging in."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import World, login
from tests.conftest import stack_env
from vitalvagt.stack import Stack

pytestmark = pytest.mark.stack


def vv(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitalvagt.cli", "user", *args],
        input=stdin,
        env=stack_env(stack),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_add_list_disable_and_log_in(stack: Stack, world: World, client: TestClient) -> None:
    user = f"cli-{world.a.team[-8:]}"
    r = vv(stack, "add", user, "--role", "team_lead", "--team", world.a.team, "--name", "Lis")
    assert r.returncode == 0, r.stderr
    password = r.stdout.split("password (shown once): ")[1].strip()
    assert len(password) >= 16
    assert login(client, user, password)["token_type"] == "bearer"
    r = vv(
        stack,
        "add",
        f"{user}-2",
        "--role",
        "nurse",
        "--team",
        world.a.team,
        "--password-stdin",
        stdin="a passphrase of mine\n",
    )
    assert r.returncode == 0 and "password" not in r.stdout, r.stdout
    login(client, f"{user}-2", "a passphrase of mine")
    r = vv(stack, "add", f"{user}-3", "--role", "nurse", "--team", "no-such-team")
    assert r.returncode != 0 and "unknown team" in r.stderr
    listed = vv(stack, "list").stdout
    assert f"{user}\tteam_lead\t{world.a.team}\tactive\tLis" in listed
    assert vv(stack, "disable", user).returncode == 0
    assert f"{user}\tteam_lead\t{world.a.team}\tdisabled" in vv(stack, "list").stdout
    r = client.post("/auth/token", data={"username": user, "password": password})
    assert r.status_code == 401
