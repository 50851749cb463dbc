"""`device setup` on a group, with --fleet, against a real OpenSSH server on 127.0.0.1.

Two "boards" are two ports of one sshd, each giving its sessions a HOME of its own (so each
board has its own ~/.local/share/edgeprune/venv), plus one board whose port nobody listens on.
`device setup GROUP --offline --fleet --superlink` sets both up at once (from wheels the laptop
downloads: pip's cache keeps that fast after the first run), reports the dead board and exits 2;
a second set-up changes nothing. Then each board's launch script, as written, starts its
SuperNode from the board's venv; they join a real SuperLink (LocalFleet) and a round of the
fleet app completes with both. Skipped without sshd or flwr.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from edgeprune.fleet.local import LocalFleet, free_port, wait_for
from edgeprune.host import registry
from edgeprune.model import Model
from tests.cli_run import run
from tests.device_rig import SSHD, Sshd, have
from tests.models import random_inputs

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.host("paramiko", "flwr"),
    pytest.mark.skipif(
        have(SSHD, "ssh-keygen", "/usr/bin/python3") is not None,
        reason="needs openssh-server and a python3 with venv (apt-get install openssh-server)",
    ),
]

PER_BOARD = 6
TIMEOUT = 300  # a round on a loaded 2-core machine: each message starts a ClientApp process


def test_group_setup_with_fleet_then_a_round(config, tmp_path, capsys, monkeypatch, tflite_model):
    homes = (tmp_path / "pi1", tmp_path / "pi2")
    for home in homes:
        home.mkdir()
    (tmp_path / "sshd-rig").mkdir()
    with contextlib.ExitStack() as stack:
        sshd = Sshd(tmp_path / "sshd-rig", homes)
        stack.callback(sshd.stop)
        fleet = stack.enter_context(LocalFleet(tmp_path / "fleet"))
        nodes: list[subprocess.Popen] = []
        stack.callback(lambda: [LocalFleet.kill(node) for node in nodes])
        monkeypatch.setenv("EDGEPRUNE_KNOWN_HOSTS", str(sshd.known_hosts))
        key = sshd.user_key
        for name, port in (("pi1", sshd.home_ports[0]), ("pi2", sshd.home_ports[1])):
            url = f"ssh://{sshd.user}@127.0.0.1:{port}/~/w?key={key}"
            assert run(capsys, "device", "add", name, url)[0] == 0
        gone = f"ssh://{sshd.user}@127.0.0.1:{free_port()}/~/w?key={key}"
        assert run(capsys, "device", "add", "gone", gone)[0] == 0
        assert run(capsys, "device", "group", "add", "lab", "pi1", "pi2", "gone")[0] == 0

        setup = ["device", "setup", "lab", "--offline", "--fleet"]
        setup += ["--superlink", f"127.0.0.1:{fleet.port}", "-q"]
        code, out, err = run(capsys, *setup)
        assert code == 2, out + err
        lines = out.splitlines()
        assert lines[0] == "device setup on lab (3 boards): 2 ok, 1 failed"
        rows = {line.split()[0]: line for line in lines[2:]}
        assert " ok " in rows["pi1"] and " ok " in rows["pi2"] and "FAILED" in rows["gone"]
        assert "pi1: installed edgeprune" in rows["pi1"]
        assert err.splitlines() == [
            "edgeprune: error: device setup failed on 1 of 3 boards of lab: gone"
        ]

        devices = registry.load()
        for name, home in zip(("pi1", "pi2"), homes):
            venv = home / ".local/share/edgeprune/venv"
            assert devices[name].endswith(f"?python={venv}/bin/python&key={key}")
            assert (venv / "bin/flower-supernode").exists()
            script = home / ".local/share/edgeprune/fleet/supernode.sh"
            assert os.access(script, os.X_OK)
            text = script.read_text()
            assert f"--superlink 127.0.0.1:{fleet.port}" in text and "--insecure" in text
            assert f"data='{home}/w/samples'" in text
            unit = home / ".config/systemd/user/edgeprune-supernode.service"
            assert f'ExecStart="{script}"' in unit.read_text()
            if shutil.which("systemd-analyze"):  # systemd's own reading of the unit
                verified = subprocess.run(["systemd-analyze", "verify", str(unit)],
                                          capture_output=True, text=True)  # fmt: skip
                assert verified.returncode == 0 and not verified.stderr, verified.stderr
        assert devices["gone"] == gone  # a failed board's entry is left as it was

        # Idempotent: the same set-up again installs and writes nothing.
        code, out, _ = run(capsys, "device", "setup", "pi1", *setup[3:-1], "--json")
        again = json.loads(out)
        assert code == 0 and not again["changed"] and again["fleet"]["written"] == []

        # Each board's launch script starts its SuperNode; both join the SuperLink.
        model = tflite_model("float32", "mixed")
        loaded = Model.load(model)
        shape = tuple(loaded.tensor(loaded.main.inputs[0]).shape[1:])
        for k, home in enumerate(homes):
            (home / "w/samples").mkdir(parents=True)
            np.save(home / "w/samples/x.npy", random_inputs(PER_BOARD, shape, seed=k))
            log = tmp_path / f"node{k}.log"
            script = home / ".local/share/edgeprune/fleet/supernode.sh"
            env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
            with open(log, "wb") as f:
                nodes.append(
                    subprocess.Popen(
                        [str(script), "--port", str(free_port())],
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                )
            wait_for(log, "SuperNode ID", nodes[-1], 120)
        report = fleet.run(
            model,
            TIMEOUT,
            boards=2,
            **{"min-boards": 2, "rule": "fixed", "sparsity": 0.5},
        )
        stats = report["rounds"]["statistics"]
        assert stats["answered"] == 2 and stats["missing"] == []
        assert report["rounds"]["delivery"]["boards"] == 2
        for home in homes:  # each board saved the fleet model where its node config says
            assert Model.load(home / ".local/share/edgeprune/fleet/fleet.tflite")
