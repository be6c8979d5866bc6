"""What a shell command line does, as small facts: downloads and runs code, decodes base64 into a shell,
runs something from a temporary or hidden directory, wipes traces. Shared by the cron, systemd and
shell-history collectors (and any other that meets a command line).

One function is the API: `shell_traits(command) -> dict`. It never runs anything; it reads text with
plain regular expressions that stay linear on hostile input (a 1 MB crontab line). The keys:

- ``downloads_and_executes`` (bool): a fetcher (curl, wget, python urllib, /dev/tcp …) whose output
  goes to an interpreter (``| sh``, ``| bash``, ``| python``), or ``sh -c "$(curl …)"``,
  ``bash <(wget …)``, or a fetch followed by ``chmod +x`` — the TeamTNT/Kinsing dropper shapes.
- ``base64_pipeline`` (bool): base64-decoded text piped to a shell or passed to ``eval``/``exec``.
- ``runs_from_tmp`` (bool) and ``executed_paths`` (list): programs started from /tmp, /var/tmp,
  /dev/shm (or after ``cd`` into one); ``runs_from_hidden_dir`` (bool) for a dot directory.
- ``evasion`` (list of names): ``history_disabled``, ``history_cleared``, ``immutable_flag_change``,
  ``firewall_disabled``, ``selinux_disabled``, ``log_clearing``, ``security_agent_removed``.
- ``urls`` (list): http(s)/ftp URLs mentioned (at most 20).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["TEMP_DIRS", "hidden_component", "in_temp_dir", "shell_traits"]

TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/", "/dev/mqueue/")  # noqa: S108 - we look, not write
MAX_SCAN = 1024 * 1024  # a command longer than this is judged on its first MiB
_MAX_LIST = 20

_FETCH = re.compile(r"\b(?:curl|wget|fetch|tftp|lwp-download|lwp-request|aria2c)\b|urllib|urlopen|requests\.get"
                    r"|/dev/tcp/|\bnc\s+\S+\s+\d+\s*<", re.IGNORECASE)
_INTERPRETER = r"(?:sudo\s+(?:-\S+\s+)*)?(?:/usr)?(?:/local)?(?:/s?bin/)?(?:ba|da|z|k|a|c|tc)?sh\b|" \
               r"(?:/usr)?(?:/bin/)?(?:python[\d.]*|perl|php|ruby|node)\b"
_PIPE_TO_INTERPRETER = re.compile(rf"\|\s*(?:{_INTERPRETER})")
_SUBST_FETCH = re.compile(r"(?:\$\(|`|<\()\s*(?:\S*/)?(?:curl|wget)\b", re.IGNORECASE)
_SHELL_RUNS_SUBST = re.compile(r"\b(?:(?:ba|da|z)?sh|eval|source|\.)\s+(?:-c\s+)?[\"']?(?:\$\(|`|<\()")
_CHMOD_EXEC = re.compile(r"\bchmod\s+(?:-\S+\s+)*(?:[ugoa]*\+[rwX]*x|0?[0-7]?[1357][0-7]{2}|0?[0-7]{2}[1357])\b")
_BASE64_DECODE = re.compile(r"\bbase64\s+(?:-\w*[dD]\w*|--decode)\b|b64decode|base64_decode")
_EVAL_EXEC = re.compile(r"\beval\b|\bexec\s*\(|\bexec\s+\"?\$\(")
_INLINE_FETCH = re.compile(r"urlopen|urllib|requests\.get|LWP::Simple|file_get_contents\s*\(\s*[\"']https?:")
_INLINE_EXEC = re.compile(r"\bexec\s*\(|\beval\s*\(|\bsystem\s*\(")
_URL = re.compile(r"\b(?:https?|ftp|tftp)://[^\s'\"|;&<>()`]{1,500}", re.IGNORECASE)

_EVASION = {
    "history_disabled": re.compile(r"\bunset\s+HISTFILE\b|\bHISTFILE=[\"']?/dev/null|\bHISTSIZE=[\"']?0\b|"
                                   r"\bset\s+\+o\s+history\b|\bHISTFILESIZE=[\"']?0\b|"
                                   r"\bln\s+-\S*s\S*\s+/dev/null\s+\S*_history\b"),
    "history_cleared": re.compile(r"\bhistory\s+-c\b|\bhistory\s+-w\s+/dev/null|(?:>|\brm\s+(?:-\S+\s+)*)\s*\S*"
                                  r"\.(?:bash|zsh|sh|ash)_history\b"),
    "immutable_flag_change": re.compile(r"\bchattr\s+(?:-\S+\s+)*[-+=][aiAu]*[ia]"),
    "firewall_disabled": re.compile(r"\biptables\s+(?:-t\s+\S+\s+)?(?:-F|--flush|-X)\b|\bufw\s+disable\b|"
                                    r"\bnft\s+flush\s+ruleset\b|\bsystemctl\s+(?:stop|disable|mask)\s+"
                                    r"(?:firewalld|ufw|iptables|nftables)\b|\bservice\s+(?:firewalld|ufw|iptables)"
                                    r"\s+stop\b|\biptables\s+-P\s+INPUT\s+ACCEPT\b"),
    "selinux_disabled": re.compile(r"\bsetenforce\s+0\b|SELINUX=disabled"),
    "log_clearing": re.compile(r"\brm\s+(?:-\S+\s+)*-\S*[rf]\S*\s+(?:\S+\s+)*/var/log\b|"
                               r"^\s*(?:cat\s+/dev/null\s*|echo\s*(?:\"\"|'')?\s*|:\s*|true\s*)?>\s*/var/log/\S+|"
                               r"\btruncate\s+(?:-\S+\s+)*-s\s*0\s+\S*/var/log/|\bshred\b.*/var/log/|"
                               r"\bjournalctl\s.*--vacuum-(?:time|size)=1\w?\b"),
    "security_agent_removed": re.compile(r"\b(?:aliyun|aegis|AliYunDun|aliyun-service|YDService|YDLive|qcloud|"
                                         r"bcm-agent|cloudmonitor|hostguard|uniagent)\b.*(?:uninstall|remove|stop|"
                                         r"kill|rm\s+-)|(?:uninstall|pkill|killall|kill|rm\s+-\S*)\s.*\b(?:aliyun|"
                                         r"aegis|AliYunDun|YDService|qcloud|bcm-agent|cloudmonitor)\b",
                                         re.IGNORECASE),
}

# Splits a command line into simple commands (approximately: quoting is not tracked).
_SEGMENT = re.compile(r"\|\||&&|[;|&\n]|\$\(|`|\(|\)|\{|\}")
_WRAPPERS = frozenset({"nohup", "sudo", "exec", "nice", "setsid", "env", "command", "builtin", "time", "ionice",
                       "chroot", "stdbuf", "doas", "su", "runuser", "flock", "timeout", "then", "do", "else",
                       "!", "xargs"})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "python", "python2", "python3", "perl", "php",
                     "ruby", "node", "source", "."})
_EVASION_SEGMENT = re.compile(r"\|\||&&|[;|&\n]")
_SEGMENT_SCAN = 4096
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def in_temp_dir(path: str) -> bool:
    """Whether an absolute path lies under a world-writable temporary directory."""
    return any(path.startswith(d) or path == d.rstrip("/") for d in TEMP_DIRS)


def hidden_component(path: str) -> bool:
    """Whether an absolute path passes through (or names) a dot file or directory: /root/.x/y, /usr/lib/.z."""
    return path.startswith("/") and any(p.startswith(".") and p not in (".", "..") for p in path.split("/"))


def _words(segment: str) -> list[str]:
    return [w.strip("\"'") for w in segment.split()]


def _executed(segment: str) -> str | None:
    """The program a simple command runs (the script for `sh /tmp/x`), or None."""
    words = _words(segment)
    i = 0
    while i < len(words):
        word = words[i]
        base = word.rsplit("/", 1)[-1]
        if not word or _ASSIGNMENT.match(word) or word.startswith(("-", ">", "<", "2>", "1>")):
            i += 1
        elif base in _WRAPPERS:
            i += 2 if base == "timeout" and i + 1 < len(words) else 1
        elif base in _SHELLS and i + 1 < len(words) and not words[i + 1].startswith("-"):
            return words[i + 1]
        elif base in _SHELLS:
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 1
            if i < len(words) and words[i - 1] in ("-c", "-e"):
                return None  # an inline script: its own commands are other segments of this line
        else:
            return word
    return None


def _executions(command: str) -> list[str]:
    paths: list[str] = []
    cwd = ""
    for segment in _SEGMENT.split(command):
        words = _words(segment)
        if len(words) >= 2 and words[0] == "cd":
            cwd = words[1]
            continue
        program = _executed(segment)
        if not program:
            continue
        if program.startswith("./") and cwd.startswith("/"):
            program = cwd.rstrip("/") + program[1:]
        if program.startswith("/") and program not in paths:
            paths.append(program)
        if len(paths) >= _MAX_LIST:
            break
    return paths


def _evasion(text: str) -> list[str]:
    """Trace-wiping commands, judged per simple command (each cut at 4 KiB, so the patterns stay cheap)."""
    found: list[str] = []
    for segment in _EVASION_SEGMENT.split(text):
        segment = segment[:_SEGMENT_SCAN]
        for name, pattern in _EVASION.items():
            if name not in found and pattern.search(segment):
                found.append(name)
    return [name for name in _EVASION if name in found]


def shell_traits(command: str) -> dict[str, Any]:
    """Facts about one command line or script text (see the module docstring for the keys)."""
    text = command[:MAX_SCAN]
    fetches = bool(_FETCH.search(text))
    downloads_and_executes = bool(
        (fetches and (_PIPE_TO_INTERPRETER.search(text) or _CHMOD_EXEC.search(text)))
        or (_SUBST_FETCH.search(text) and _SHELL_RUNS_SUBST.search(text))
        or (_INLINE_FETCH.search(text) and _INLINE_EXEC.search(text))
    )
    base64_pipeline = bool(_BASE64_DECODE.search(text)
                           and (_PIPE_TO_INTERPRETER.search(text) or _EVAL_EXEC.search(text)))
    executed = _executions(text)
    temp = [p for p in executed if in_temp_dir(p)]
    hidden = [p for p in executed if hidden_component(p)]
    urls: list[str] = []
    for match in _URL.finditer(text):
        if match.group(0) not in urls:
            urls.append(match.group(0))
        if len(urls) >= _MAX_LIST:
            break
    return {
        "downloads_and_executes": downloads_and_executes,
        "fetches": fetches,
        "base64_pipeline": base64_pipeline,
        "runs_from_tmp": bool(temp),
        "runs_from_hidden_dir": bool(hidden),
        "executed_paths": executed,
        "evasion": _evasion(text),
        "urls": urls,
    }
