"""Trailing newlines and other whole-string tricks, through the real CLI (issue 16, item 10):
`^...$` let "pi\\n" through as a user name (written into userconf.txt) and a 64-hex PSK
plus a newline through as a raw key. Every validator matches the whole string, the
schemas too; the card is left untouched."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess

import provision_cards as cards  # loaded by conftest.py
import pytest
import yaml

from rig.cli import main

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None, reason=f"{cards.tools_missing()} not installed"
)

CLI_INPUTS = [  # (option, hostile value)
    ("--user", "pi\n"),
    ("--user", "pi\nroot"),
    ("--user", "pi\r"),
    ("--hostname", "octopi\n"),
    ("--hostname", "octopi\nevil"),
    ("--country", "DE\n"),
    ("--country", "de\n"),
]


@pytest.fixture
def card(tmp_path):
    return cards.build_card(tmp_path, generation="octopi-1.0.0", fat=32)


@pytest.mark.parametrize(("option", "value"), CLI_INPUTS)
def test_a_trailing_newline_is_refused_on_the_command_line(card, option, value, capsys):
    before = card.sha256()
    assert main(["provision", "--image", str(card.path), option, value]) == 2
    assert option.lstrip("-") in capsys.readouterr().err
    assert card.sha256() == before


CONFIG_INPUTS = [  # (dotted key, hostile value) in rig.yaml
    ("user.name", "pi\n"),
    ("wifi.country", "DE\n"),
    ("wifi.psk", "ab" * 32 + "\n"),  # a raw key plus newline: another key on the card
    ("wifi.psk", "\n" + "ab" * 32),
]


@pytest.mark.parametrize(("key", "value"), CONFIG_INPUTS)
def test_a_trailing_newline_in_rig_yaml_is_refused_where_it_is(card, tmp_path, key, value, capsys):
    config = {
        "wifi": {"ssid": "lab", "psk": "a-long-passphrase", "country": "DE"},
        "user": {"name": "pi", "password": "a-password"},
    }
    section, field = key.split(".")
    config[section][field] = value
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(config))
    before = card.sha256()
    assert main(["--config", str(path), "provision", "--image", str(card.path)]) == 2
    err = capsys.readouterr().err
    assert key in err or field in err, err
    assert card.sha256() == before


def test_an_archive_bomb_stops_at_the_cards_size(tmp_path, capsys, monkeypatch):
    """64 MiB of zeros in a 64 kB gzip, written to a 16 MiB card: the unpacking stops at
    16 MiB (the card), not at the 256 GiB default cap, and leaves nothing in the cache."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup (a real loop device)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bomb = tmp_path / "bomb.img.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range(64):
            f.write(bytes(1 << 20))
    backing = tmp_path / "card.bin"
    with open(backing, "wb") as f:
        f.truncate(16 << 20)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        code = main(["flash", "--target", loop, str(bomb), "--allow-fixed", "--no-verify"])
        assert code == 2
        assert "unpacks to more than 16777216 bytes" in capsys.readouterr().err
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in left) <= 16 << 20, left
