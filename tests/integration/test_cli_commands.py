"""Each remaining subcommand run as a user runs it: a subprocess on real files and devices."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_sim.idreader import IdReaderSimulator
from tests.support.e2e import EXAMPLES, make_guest

LOCKGW = [str(Path(sys.executable).with_name("lockgw"))]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOCKGW, *args], capture_output=True, text=True, timeout=timeout)


def test_keys_init_show_rotate(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config()
    key_file = tmp_path / "fresh" / "gateway.jwks"
    made = run("keys", "init", "--config", str(config), "--file", str(key_file), "--json")
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["fingerprint"].startswith("SHA256:")
    assert all("d" not in key for key in doc["jwks"]["keys"]), "only the public set is printed"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    again = run("keys", "init", "--config", str(config), "--file", str(key_file))
    assert again.returncode == 2 and "already exists" in again.stderr

    shown = run("keys", "show", "--config", str(config), "--file", str(key_file), "--json")
    assert json.loads(shown.stdout)["fingerprint"] == doc["fingerprint"]
    rotated = run("keys", "rotate", "--config", str(config), "--file", str(key_file), "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["fingerprint"] != doc["fingerprint"]

    os.chmod(key_file, 0o644)
    loose = run("keys", "show", "--config", str(config), "--file", str(key_file))
    assert loose.returncode == 2 and "0600" in loose.stderr + loose.stdout


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="face photos absent")
def test_readers_test_prints_the_card_masked() -> None:
    guest = make_guest(None, name="孙小梅")
    with IdReaderSimulator() as reader:
        port = reader.port_path
        proc = subprocess.Popen(
            [*LOCKGW, "readers", "test", port, "--timeout", "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        reader.present(guest.card)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    number = guest.card.id_number
    assert number[:6] + "********" + number[-4:] in out
    assert number not in out and guest.card.name not in out
    assert " ms" in out


def test_readers_test_without_a_card_fails_clearly() -> None:
    with IdReaderSimulator() as reader:
        result = run("readers", "test", reader.port_path, "--timeout", "1.5")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() or result.stdout.strip()


def test_readers_test_on_a_missing_port() -> None:
    result = run("readers", "test", "/dev/lockgw-no-such-reader", "--timeout", "1")
    assert result.returncode == 1
    assert "/dev/lockgw-no-such-reader" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="face photos absent")
def test_face_eval_on_a_labelled_folder(tmp_path: Path) -> None:
    knn = EXAMPLES / "knn_examples" / "train"
    for person in ("obama", "biden"):
        folder = tmp_path / person
        folder.mkdir()
        for image in sorted((knn / person).iterdir()):
            (folder / image.name).symlink_to(image)
    result = run("face", "eval", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    text = json.dumps(doc)
    assert "genuine" in text and "impostor" in text
    assert run("face", "eval", str(tmp_path / "nothing-here")).returncode == 2


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="face photos absent")
def test_demo_plays_the_whole_day() -> None:
    result = run("demo", timeout=400)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "all steps as expected: 12/12" in result.stdout
    # The printed photo of guest A is refused as no live person.
    assert "A printed photo of guest A is held up with the card" in result.stdout
