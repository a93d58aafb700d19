"""Every configuration and matrix example in the README loads, and every `rig` command line
in it parses: the documentation cannot drift from what the loaders accept."""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import yaml

from rig.cli import build_parser
from rig.config import load_config
from rig.orchestration.matrix import load_matrix

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.M | re.S)


def _blocks(kind: str) -> list[tuple[int, str]]:
    """(line number, dedented text) of every fenced ``kind`` block."""
    return [
        (README[: m.start()].count("\n") + 1, textwrap.dedent(m.group(3)))
        for m in FENCE.finditer(README)
        if m.group(2) == kind
    ]


YAML = _blocks("yaml")
JSON = _blocks("json")
SH = _blocks("sh")


def test_the_readme_has_the_examples_this_test_is_about() -> None:
    assert len(YAML) >= 4 and len(JSON) >= 1 and len(SH) >= 5


def _secrets_in(data: object) -> set[str]:
    found: set[str] = set()
    if isinstance(data, dict):
        if set(data) == {"secret"}:
            found.add(data["secret"])
        for v in data.values():
            found |= _secrets_in(v)
    elif isinstance(data, list):
        for v in data:
            found |= _secrets_in(v)
    return found


@pytest.mark.parametrize("line,text", YAML, ids=[f"README.md:{n}" for n, _ in YAML])
def test_yaml_example_loads_as_rig_yaml(line, text, tmp_path, monkeypatch) -> None:
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"README.md:{line}: not a mapping"
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    names = _secrets_in(data)
    if "daemon" in data or "mail" in data:  # the daemon's secrets, named in the README
        names |= {"webhook_secret", "github_token", "smtp_password"}
    for name in names:
        monkeypatch.setenv(f"RIG_SECRET_{name.upper()}", f"{name}-value-1234567890")
    if "secrets" in data:  # the file it names must exist (mode 0600)
        path = Path(str(data["secrets"]).replace("~", str(home)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
        path.chmod(0o600)
    if isinstance(data.get("daemon"), dict) and "matrix" in data["daemon"]:
        (tmp_path / "matrix").mkdir()
        (tmp_path / "matrix" / "acceptance.json").symlink_to(REPO / "matrix" / "acceptance.json")
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(text)
    config = load_config(cfg)
    if "devices" in data:
        assert set(config.devices) == set(data["devices"]), f"README.md:{line}"
    if "daemon" in data:
        from rig.daemon.settings import load_settings

        settings = load_settings(config)
        assert settings.matrix is None or load_matrix(settings.matrix).scenarios


@pytest.mark.parametrize("line,text", JSON, ids=[f"README.md:{n}" for n, _ in JSON])
def test_json_example_loads_as_a_matrix(line, text, tmp_path) -> None:
    data = json.loads(text)
    data.pop("$schema", None)
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(data))
    assert load_matrix(path).scenarios, f"README.md:{line}"


def _rig_lines() -> list[tuple[int, str]]:
    out = []
    for line, text in SH:
        for i, raw in enumerate(text.splitlines()):
            command = raw.split("#", 1)[0].strip()
            for part in re.split(r"&&|\|\|", command):
                part = part.strip()
                words = shlex.split(part) if part else []
                while words and words[0] == "sudo":
                    words = words[1:]
                if words and re.fullmatch(r"(\S*/)?rig", words[0]):
                    out.append((line + 1 + i, " ".join(words[1:])))
    return out


RIG_LINES = _rig_lines()


@pytest.mark.parametrize("line,args", RIG_LINES, ids=[f"README.md:{n}" for n, _ in RIG_LINES])
def test_rig_command_line_in_the_readme_parses(line, args) -> None:
    parser = build_parser()
    try:
        parsed = parser.parse_args(shlex.split(args))
    except SystemExit as e:
        pytest.fail(f"README.md:{line}: `rig {args}` does not parse (exit {e.code})")
    assert callable(parsed.func)


def test_the_files_the_docs_and_workflows_name_exist() -> None:
    # paths of files (an extension) or folders (a trailing slash), not e.g. rig/acceptance
    named = set(
        re.findall(r"`((?:matrix|scripts|rig|workflows)/(?:[\w./-]+\.\w+|[\w./-]+/))`", README)
    )
    for wf in (REPO / "workflows").glob("*.yml"):
        named |= set(re.findall(r"\b((?:matrix|scripts)/[\w.-]+\.\w+)", wf.read_text()))
    missing = sorted(n for n in named if not (REPO / n.rstrip("/")).exists() and "*" not in n)
    assert missing == []
