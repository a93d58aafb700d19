"""firstrun.sh: the Imager-style script systemd runs from the kernel command line.

Not a shell: a small interpreter for the commands such scripts are made of
(hostname, user, SSH, Wi-Fi, locale, self-removal), with bash's quoting rules
(single quotes literal, double quotes expand ``$VAR``, backslash escapes,
adjacent parts concatenate, here-documents). A ``$6$...`` hash in double
quotes is mangled exactly as bash would mangle it. A command it does not know
or a syntax error makes the script fail, as a broken script fails on the Pi:
the device then never comes up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rig.virtual.bootfiles import BootFileError

IMAGER = "/usr/lib/raspberrypi-sys-mods/imager_custom"
USERCONF = "/usr/lib/userconf-pi/userconf"
BOOT_FILES = ("/boot/", "/boot/firmware/")
OPS = ("&&", "||", ">>", "<<", ";", "|", ">", "<", "\n", "&")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class FirstrunEffects:
    """What the script did, for the virtual Pi to apply to the card."""

    hostname: str | None = None
    user: str | None = None  # rename the first user to this
    password_hash: str | None = None
    ssh_enabled: bool = False
    ssh_password_auth: bool | None = None
    ssh_keys: list[str] = field(default_factory=list)
    wifi_ssid: str | None = None
    wifi_psk: str | None = None
    wifi_hidden: bool = False
    wifi_country: str | None = None
    wpa_conf: str | None = None  # text written to /etc/wpa_supplicant/wpa_supplicant.conf
    nm_files: dict[str, str] = field(default_factory=dict)  # keyfiles written by here-document
    rfkill_unblocked: bool = False
    keymap: str | None = None
    timezone: str | None = None
    ran_userconf: bool = False  # userconf disables userconfig.service (cancel-rename)
    removed_self: bool = False
    stripped_cmdline: bool = False
    exit_code: int = 0
    log: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ lexing

# A word is a list of parts: (kind, text) with kind "lit" (no expansion),
# "exp" (expand $VAR) or "cmd" (command substitution).
Part = tuple[str, str]


@dataclass
class Word:
    parts: list[Part]
    line: int
    heredoc: str | None = None  # set on the delimiter word after <<


@dataclass
class Op:
    op: str
    line: int


Token = Word | Op


def _lex(text: str) -> list[Token]:
    toks: list[Token] = []
    i, n, line = 0, len(text), 1
    pending_heredocs: list[tuple[Word, str]] = []
    while i < n:
        c = text[i]
        if c == "\n":
            toks.append(Op("\n", line))
            line += 1
            i += 1
            for word, delim in pending_heredocs:
                body = []
                while True:
                    if i >= n:
                        raise BootFileError(f"line {line}: here-document {delim!r} not closed")
                    end = text.find("\n", i)
                    end = n if end < 0 else end
                    current = text[i:end]
                    i = end + 1
                    line += 1
                    if current == delim:
                        break
                    body.append(current + "\n")
                word.heredoc = "".join(body)
            pending_heredocs = []
            continue
        if c in " \t":
            i += 1
            continue
        if c == "\\" and i + 1 < n and text[i + 1] == "\n":
            i += 2
            line += 1
            continue
        if c == "#" and (not toks or isinstance(toks[-1], Op) or text[i - 1] in " \t"):
            while i < n and text[i] != "\n":
                i += 1
            continue
        op = next((o for o in OPS if text.startswith(o, i) and o != "\n"), None)
        if op:
            toks.append(Op(op, line))
            i += len(op)
            if op == "<<":
                if text.startswith("-", i):
                    raise BootFileError(f"line {line}: '<<-' here-documents are not supported")
                while i < n and text[i] in " \t":
                    i += 1
                word, i, line = _word(text, i, line)
                delim = "".join(t for _, t in word.parts)
                toks.append(word)
                pending_heredocs.append((word, delim))
            continue
        word, i, line = _word(text, i, line)
        toks.append(word)
    if pending_heredocs:
        raise BootFileError("here-document not closed at end of script")
    return toks


def _word(text: str, i: int, line: int) -> tuple[Word, int, int]:
    parts: list[Part] = []
    n = len(text)
    start_line = line
    while i < n:
        c = text[i]
        if c in " \t\n" or any(text.startswith(o, i) for o in OPS if o != "\n"):
            break
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise BootFileError(f"line {line}: unterminated single quote")
            parts.append(("lit", text[i + 1 : end]))
            line += text.count("\n", i, end)
            i = end + 1
        elif c == '"':
            i += 1
            buf = ""
            while True:
                if i >= n:
                    raise BootFileError(f"line {start_line}: unterminated double quote")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < n and text[i + 1] in '$`"\\\n':
                    if text[i + 1] != "\n":
                        if buf:
                            parts.append(("exp", buf))
                            buf = ""
                        parts.append(("lit", text[i + 1]))
                    i += 2
                    continue
                if ch == "`" or text.startswith("$(", i):
                    if buf:
                        parts.append(("exp", buf))
                        buf = ""
                    sub, i = _substitution(text, i, line)
                    parts.append(("cmd", sub))
                    continue
                if ch == "\n":
                    line += 1
                buf += ch
                i += 1
            if buf:
                parts.append(("exp", buf))
            if not parts:
                parts.append(("lit", ""))
        elif c == "\\":
            if i + 1 < n:
                parts.append(("lit", text[i + 1]))
            i += 2
        elif c == "`" or text.startswith("$(", i):
            sub, i = _substitution(text, i, line)
            parts.append(("cmd", sub))
        else:
            j = i
            while (
                j < n
                and text[j] not in " \t\n'\"\\`"
                and not text.startswith("$(", j)
                and not any(text.startswith(o, j) for o in OPS if o != "\n")
            ):
                j += 1
            parts.append(("exp", text[i:j]))
            i = j
    return Word(parts, start_line), i, line


def _substitution(text: str, i: int, line: int) -> tuple[str, int]:
    if text[i] == "`":
        end = text.find("`", i + 1)
        if end < 0:
            raise BootFileError(f"line {line}: unterminated backquote")
        return text[i + 1 : end], end + 1
    depth, j = 0, i + 1
    while j < len(text):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return text[i + 2 : j], j + 1
        j += 1
    raise BootFileError(f"line {line}: unterminated $(")


# ------------------------------------------------------------------ parsing


@dataclass
class Command:
    words: list[Word]
    redirects: list[tuple[str, Word]]
    line: int
    pipe_to: Command | None = None


def _commands(toks: list[Token]) -> list[Command]:
    """Split into simple commands; '|' chains, ';' '&&' '||' newline separate."""
    out: list[Command] = []
    cur = Command([], [], 0)
    first: Command | None = None
    i = 0

    def flush() -> None:
        nonlocal cur, first
        if cur.words or cur.redirects:
            if first is None:
                out.append(cur)
            else:
                tail = first
                while tail.pipe_to is not None:
                    tail = tail.pipe_to
                tail.pipe_to = cur
                out.append(first)
        elif first is not None:
            raise BootFileError(f"line {cur.line}: syntax error near '|'")
        cur, first = Command([], [], 0), None

    while i < len(toks):
        t = toks[i]
        if isinstance(t, Word):
            if not cur.words and not cur.redirects:
                cur.line = t.line
            cur.words.append(t)
        elif t.op in (">", ">>", "<", "<<"):
            if i + 1 >= len(toks) or not isinstance(toks[i + 1], Word):
                raise BootFileError(f"line {t.line}: syntax error after {t.op!r}")
            target = toks[i + 1]
            assert isinstance(target, Word)
            cur.redirects.append((t.op, target))
            i += 1
        elif t.op == "|":
            if not cur.words:
                raise BootFileError(f"line {t.line}: syntax error near '|'")
            if first is None:
                first = cur
            else:
                tail = first
                while tail.pipe_to is not None:
                    tail = tail.pipe_to
                tail.pipe_to = cur
            cur = Command([], [], 0)
        elif t.op == "&":
            raise BootFileError(f"line {t.line}: background jobs are not supported")
        else:
            flush()
        i += 1
    flush()
    return out


# ------------------------------------------------------------------ running


class _Run:
    def __init__(self, exists: Callable[[str], bool], hostname: str, first_user: tuple[str, str]):
        self.exists = exists
        self.vars: dict[str, str] = {"0": "/boot/firstrun.sh"}
        self.hostname = hostname
        self.first_user = first_user  # (name, home)
        self.fx = FirstrunEffects()
        self.exited = False

    # -- expansion
    def expand(self, w: Word) -> str:
        out = ""
        for kind, text in w.parts:
            if kind == "lit":
                out += text
            elif kind == "cmd":
                out += self.substitute(text.strip(), w.line)
            else:
                out += self._expand_vars(text)
        return out

    def _expand_vars(self, text: str) -> str:
        def repl(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2) or m.group(3)
            return self.vars.get(name, "")

        return re.sub(
            r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$([0-9@*#?$!-])",
            repl,
            text,
        )

    def substitute(self, cmd: str, line: int) -> str:
        norm = " ".join(cmd.split())
        if re.fullmatch(r"cat /etc/hostname( \| tr -d .*)?", norm):
            return self.hostname
        m = re.fullmatch(r"getent passwd 1000 \| cut -d: -f([16])", norm)
        if m:
            return self.first_user[0] if m.group(1) == "1" else self.first_user[1]
        raise BootFileError(f"line {line}: cannot run command substitution {cmd!r}")

    # -- conditions
    def test(self, argv: list[str], line: int) -> bool:
        if argv[0] in ("[", "[["):
            if argv[-1] not in ("]", "]]"):
                raise BootFileError(f"line {line}: missing ']'")
            argv = argv[1:-1]
        elif argv[0] == "test":
            argv = argv[1:]
        elif argv[0] == "grep":
            return False  # the files such scripts grep (lightdm.conf) are not on OctoPi
        else:
            raise BootFileError(f"line {line}: cannot evaluate condition {' '.join(argv)!r}")
        neg = False
        if argv and argv[0] == "!":
            neg, argv = True, argv[1:]
        if len(argv) == 2 and argv[0] in ("-f", "-e", "-x", "-d", "-s"):
            result = self.exists(argv[1])
        elif len(argv) == 3 and argv[1] in ("=", "==", "!="):
            result = (argv[0] == argv[2]) == (argv[1] != "!=")
        elif len(argv) == 2 and argv[0] in ("-n", "-z"):
            result = bool(argv[1]) == (argv[0] == "-n")
        elif len(argv) == 1:
            result = bool(argv[0])
        else:
            raise BootFileError(f"line {line}: cannot evaluate test {' '.join(argv)!r}")
        return result != neg


def interpret_firstrun(
    text: str,
    *,
    exists: Callable[[str], bool],
    hostname: str = "octopi",
    first_user: tuple[str, str] = ("pi", "/home/pi"),
) -> FirstrunEffects:
    """Run the script in the interpreter; BootFileError when the real one would fail.

    ``exists(path)`` answers ``[ -f path ]`` from the card's root file system.
    """
    run = _Run(exists, hostname, first_user)
    cmds = _commands(_lex(text))
    _block(run, cmds, 0, len(cmds), active=True)
    if run.fx.exit_code != 0:
        raise BootFileError(f"firstrun.sh exited with status {run.fx.exit_code}")
    return run.fx


def _keyword(c: Command) -> str:
    if not c.words:
        return ""
    w = c.words[0]
    if len(w.parts) == 1 and w.parts[0][0] == "exp":
        return w.parts[0][1]
    return ""


def _block(run: _Run, cmds: list[Command], i: int, end: int, active: bool) -> int:
    """Execute cmds[i:end] (or skip when not active); returns the index after."""
    while i < end:
        c = cmds[i]
        kw = _keyword(c)
        if kw in ("then", "else", "elif", "fi", "do", "done"):
            return i
        if kw == "if":
            i = _if(run, cmds, i, end, active)
            continue
        if kw == "for":
            i = _for(run, cmds, i, end, active)
            continue
        if active and not run.exited:
            _simple(run, c)
        i += 1
    return i


def _if(run: _Run, cmds: list[Command], i: int, end: int, active: bool) -> int:
    taken = False
    cond = cmds[i]
    cond_words = cond.words[1:]
    while True:
        ok = False
        if active and not taken:
            argv = [run.expand(w) for w in cond_words]
            if not argv:
                raise BootFileError(f"line {cond.line}: empty condition")
            ok = run.test(argv, cond.line)
        i += 1
        if i >= end or _keyword(cmds[i]) != "then":
            raise BootFileError(f"line {cond.line}: 'if' without 'then'")
        body = Command(cmds[i].words[1:], cmds[i].redirects, cmds[i].line)
        run_body = active and ok and not taken
        if body.words:
            cmds = [*cmds[:i], body, *cmds[i + 1 :]]
            i = _block(run, cmds, i, end, run_body)
        else:
            i = _block(run, cmds, i + 1, end, run_body)
        taken = taken or (active and ok)
        if i >= end:
            raise BootFileError(f"line {cond.line}: 'if' without 'fi'")
        kw = _keyword(cmds[i])
        if kw == "fi":
            return i + 1
        if kw == "elif":
            cond = cmds[i]
            cond_words = cond.words[1:]
            continue
        if kw == "else":
            rest = Command(cmds[i].words[1:], cmds[i].redirects, cmds[i].line)
            if rest.words:
                cmds = [*cmds[:i], rest, *cmds[i + 1 :]]
                i = _block(run, cmds, i, end, active and not taken)
            else:
                i = _block(run, cmds, i + 1, end, active and not taken)
            if i >= end or _keyword(cmds[i]) != "fi":
                raise BootFileError(f"line {cond.line}: 'else' without 'fi'")
            return i + 1
        raise BootFileError(f"line {cmds[i].line}: unexpected {kw!r}")


def _for(run: _Run, cmds: list[Command], i: int, end: int, active: bool) -> int:
    head = cmds[i]
    words = [run.expand(w) for w in head.words]
    if len(words) < 4 or words[2] != "in":
        raise BootFileError(f"line {head.line}: cannot parse 'for' loop")
    i += 1
    if i >= end or _keyword(cmds[i]) != "do":
        raise BootFileError(f"line {head.line}: 'for' without 'do'")
    body_start = i
    j = _block(run, cmds, i + 1, end, active=False)
    first_body = Command(cmds[body_start].words[1:], cmds[body_start].redirects, head.line)
    if j >= end or _keyword(cmds[j]) != "done":
        raise BootFileError(f"line {head.line}: 'for' without 'done'")
    if active:
        items = words[3:]
        body = ([first_body] if first_body.words else []) + cmds[body_start + 1 : j]
        # The one loop such scripts contain: unblock Wi-Fi in systemd's rfkill state.
        if all(it.startswith("/var/lib/systemd/rfkill/") for it in items) and all(
            " ".join(run.expand(w) for w in b.words).startswith("echo 0") for b in body
        ):
            run.fx.rfkill_unblocked = True
        else:
            raise BootFileError(f"line {head.line}: cannot run this 'for' loop")
    return j + 1


def _redirect_target(run: _Run, c: Command) -> tuple[str | None, str | None, str | None]:
    """(file written with >, mode, here-document text)."""
    out = mode = doc = None
    for op, w in c.redirects:
        if op in (">", ">>"):
            out, mode = run.expand(w), op
        elif op == "<<":
            doc = w.heredoc or ""
            if all(k == "exp" for k, _ in w.parts):  # unquoted delimiter: expand
                doc = run._expand_vars(doc)
    return out, mode, doc


def _simple(run: _Run, c: Command) -> None:
    fx = run.fx
    argv = [run.expand(w) for w in c.words]
    out, _mode, doc = _redirect_target(run, c)
    where = f"line {c.line}"
    if not argv:
        return
    # assignments: NAME=value
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", argv[0], re.S)
    if m and len(argv) == 1:
        run.vars[m.group(1)] = m.group(2)
        return
    cmd = argv[0].rsplit("/", 1)[-1] if argv[0].startswith("/") else argv[0]
    args = argv[1:]
    if c.pipe_to is not None:
        _pipeline(run, argv, c, where)
        return
    if cmd in (
        "set",
        "true",
        ":",
        "chmod",
        "chown",
        "groupmod",
        "dpkg-reconfigure",
        "sync",
        "install",
        "mkdir",
        "sleep",
    ):
        return
    if cmd == "exit":
        fx.exit_code = int(args[0]) if args and args[0].isdigit() else 0
        run.exited = True
        return
    if argv[0] == IMAGER:
        _imager(run, args, where)
        return
    if argv[0] == USERCONF:
        if len(args) != 2:
            raise BootFileError(f"{where}: userconf needs user and hash")
        fx.user, fx.password_hash = args
        fx.ran_userconf = True
        fx.log.append(f"userconf {args[0]}")
        return
    if cmd == "systemctl":
        units = [a for a in args[1:] if not a.startswith("-")]
        if (
            args
            and args[0] in ("enable", "start")
            and units
            and all(u in ("ssh", "ssh.service", "sshd") for u in units)
        ):
            fx.ssh_enabled = True
            return
        if args and args[0] in ("disable", "stop", "mask") and "userconfig" in " ".join(units):
            return
        raise BootFileError(f"{where}: cannot run systemctl {' '.join(args)}")
    if cmd == "echo":
        text = " ".join(a for a in args if a not in ("-n", "-e"))
        if out is None:
            return
        if out == "/etc/hostname":
            fx.hostname = text.strip()
        elif out == "/etc/timezone":
            fx.timezone = text.strip()
        elif out.startswith("/etc/ssh/sshd_config"):
            if re.fullmatch(r"PasswordAuthentication\s+no", text.strip()):
                fx.ssh_password_auth = False
        elif out.startswith("/var/lib/systemd/rfkill/"):
            fx.rfkill_unblocked = text.strip() == "0"
        else:
            raise BootFileError(f"{where}: cannot write {out}")
        return
    if cmd == "cat" and doc is not None and out is not None:
        if out == "/etc/wpa_supplicant/wpa_supplicant.conf":
            fx.wpa_conf = doc
        elif re.fullmatch(r"/etc/NetworkManager/system-connections/[^/]+\.nmconnection", out):
            fx.nm_files[out] = doc
        elif out.endswith("/.ssh/authorized_keys"):
            fx.ssh_keys += [ln for ln in doc.splitlines() if ln.strip()]
        elif out in ("/etc/default/keyboard",):
            km = re.search(r'XKBLAYOUT="?([^"\n]*)', doc)
            fx.keymap = km.group(1) if km else None
        else:
            raise BootFileError(f"{where}: cannot write {out}")
        return
    if cmd == "sed":
        files = [a for a in args if a.startswith("/")]
        script = " ".join(a for a in args if not a.startswith("-") and not a.startswith("/"))
        if any(f.endswith("cmdline.txt") for f in files):
            if re.fullmatch(r"s(.) systemd\.run\.\*\1\1g?", script):
                fx.stripped_cmdline = True
                return
            raise BootFileError(f"{where}: unknown edit of cmdline.txt: {script!r}")
        return  # /etc/hosts, lightdm, autologin, sudoers edits: nothing to model
    if cmd == "rm":
        for a in args:
            if a.startswith("-"):
                continue
            if a in ("/boot/firstrun.sh", "/boot/firmware/firstrun.sh"):
                fx.removed_self = True
        return
    if cmd == "mv":
        return
    if cmd == "usermod":
        if "-l" in args:
            new = args[args.index("-l") + 1]
            fx.user = new
        return
    if cmd == "rfkill" and args[:1] == ["unblock"]:
        fx.rfkill_unblocked = True
        return
    if cmd == "raspi-config" and args[:1] == ["nonint"] and len(args) >= 2:
        if args[1] == "do_wifi_country" and len(args) == 3:
            fx.wifi_country = args[2]
            return
        if args[1] == "do_hostname" and len(args) == 3:
            fx.hostname = args[2]
            return
        if args[1] == "do_ssh" and len(args) == 3:
            fx.ssh_enabled = args[2] == "0"
            return
    if cmd == "hostnamectl" and args[:1] == ["set-hostname"] and len(args) == 2:
        fx.hostname = args[1]
        return
    raise BootFileError(f"{where}: cannot run {' '.join(argv)!r}")


def _pipeline(run: _Run, argv: list[str], c: Command, where: str) -> None:
    nxt = c.pipe_to
    assert nxt is not None
    right = [run.expand(w) for w in nxt.words]
    if argv[0] == "echo" and right[:2] == ["chpasswd", "-e"]:
        line = " ".join(argv[1:])
        name, _, hash_ = line.partition(":")
        if not name or not hash_:
            raise BootFileError(f"{where}: chpasswd: bad input")
        run.fx.password_hash = hash_
        if name != run.first_user[0]:
            run.fx.user = name
        return
    raise BootFileError(f"{where}: cannot run pipeline {' '.join(argv)} | {' '.join(right)}")


def _imager(run: _Run, args: list[str], where: str) -> None:
    fx = run.fx
    if not args:
        raise BootFileError(f"{where}: imager_custom without a command")
    sub, rest = args[0], args[1:]
    if sub == "set_hostname" and len(rest) == 1:
        fx.hostname = rest[0]
    elif sub == "enable_ssh":  # [-k|--key-only] [-p|--pass-auth] [-d|--disabled] [KEY...]
        enable = True
        for arg in rest:
            if arg in ("-k", "--key-only"):
                fx.ssh_password_auth = False
            elif arg in ("-p", "--pass-auth"):
                fx.ssh_password_auth = True
            elif arg in ("-d", "--disabled"):
                enable = False
            elif arg:
                fx.ssh_keys.append(arg)
        fx.ssh_enabled = fx.ssh_enabled or enable
    elif sub in ("set_wlan", "set_wlan_country"):
        words = []
        for arg in rest:
            if arg in ("-h", "--hidden"):
                fx.wifi_hidden = True
            elif arg not in ("-p", "--plain"):
                words.append(arg)
        if sub == "set_wlan_country":
            if len(words) != 1:
                raise BootFileError(f"{where}: set_wlan_country needs COUNTRY")
            fx.wifi_country = words[0]
            return
        if not 1 <= len(words) <= 3:
            raise BootFileError(f"{where}: set_wlan takes SSID [PASS [COUNTRY]]")
        fx.wifi_ssid = words[0]
        fx.wifi_psk = words[1] if len(words) > 1 and words[1] else None
        if len(words) == 3 and words[2]:
            fx.wifi_country = words[2]
    elif sub == "set_keymap" and len(rest) == 1:
        fx.keymap = rest[0]
    elif sub == "set_timezone" and len(rest) == 1:
        fx.timezone = rest[0]
    else:
        raise BootFileError(f"{where}: cannot run imager_custom {' '.join(args)}")
