"""cmdline.txt: the kernel command line (only its first line counts)."""

from __future__ import annotations


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def params(text: str) -> dict[str, str]:
    """key=value parameters of the first line (later ones win, as in the kernel)."""
    out: dict[str, str] = {}
    for word in first_line(text).split():
        key, _, val = word.partition("=")
        out[key] = val
    return out


def strip_systemd_run(text: str) -> str:
    """What firstrun.sh's ``sed -i 's| systemd.run.*||g'`` does to the file."""
    lines = text.split("\n")
    return "\n".join(ln.split(" systemd.run", 1)[0] for ln in lines)


def remove_param(text: str, key: str) -> str:
    """Drop ``key=...`` from the first line (what init_resize/firstboot do to init=)."""
    line, nl, rest = text.partition("\n")
    words = [w for w in line.split(" ") if w.partition("=")[0] != key]
    return " ".join(words) + nl + rest


def add_param(text: str, key: str, value: str) -> str:
    line, nl, rest = text.partition("\n")
    words = [w for w in line.split(" ") if w and w.partition("=")[0] != key]
    # keep it in front of a pending systemd.run suffix, which firstrun.sh strips
    idx = next((i for i, w in enumerate(words) if w.startswith("systemd.run")), len(words))
    words.insert(idx, f"{key}={value}")
    return " ".join(words) + (nl or "\n") + rest
