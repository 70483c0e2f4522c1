"""Where the server's CPU goes: a summary of a py-spy `--format raw --threads` profile.

Each line of the profile is a stack (frames joined by ';', root first) and a sample count.
Reports the share of samples per thread, and the top functions by self time (the leaf
frame) and by inclusive time (anywhere on the stack), line numbers folded together.

    python bench/hotspots.py profile.txt [--top 15]
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from dataclasses import dataclass, field

_LINE = re.compile(r":\d+\)$")
_PATH_PREFIX = re.compile(r"\((?:/[^()]*/(?:site-packages|src|lib/python3\.\d+)/)")


@dataclass
class Profile:
    samples: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    own_by_thread: dict[str, Counter[str]] = field(default_factory=dict)


def frame_name(frame: str) -> str:
    """'_append_rows (/…/src/trackyard/store/sqlite.py:245)' → '_append_rows (trackyard/store/sqlite.py)'."""
    return _PATH_PREFIX.sub("(", _LINE.sub(")", frame.strip()))


def load(path: os.PathLike[str] | str) -> Profile:
    profile = Profile()
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            add_stack(profile, stack.split(";"), int(count))
    return profile


def add_stack(profile: Profile, frames: list[str], count: int) -> None:
    thread = "(all)"
    if frames and frames[0].startswith(("thread ", "process ")):
        thread = frames.pop(0)
    names = [frame_name(frame) for frame in frames] or ["(no Python frame)"]
    profile.samples += count
    profile.threads[thread] += count
    profile.own[names[-1]] += count
    profile.own_by_thread.setdefault(thread, Counter())[names[-1]] += count
    for name in set(names):
        profile.inclusive[name] += count


def _share(count: int, total: int) -> str:
    return f"{100 * count / max(total, 1):5.1f} %"


def render(profile: Profile, top: int = 15) -> str:
    out = [f"py-spy samples: {profile.samples}", "", "by thread:"]
    out += [f"  {_share(n, profile.samples)}  {name}" for name, n in profile.threads.most_common()]
    out += ["", f"top {top} functions by self time:"]
    out += [f"  {_share(n, profile.samples)}  {name}" for name, n in profile.own.most_common(top)]
    out += ["", f"top {top} functions by inclusive time:"]
    out += [f"  {_share(n, profile.samples)}  {name}" for name, n in profile.inclusive.most_common(top)]
    for thread, n in profile.threads.most_common():
        if n >= profile.samples * 0.05:
            out += ["", f"{thread}: top self time, share of this thread's samples:"]
            functions = profile.own_by_thread[thread].most_common(min(top, 10))
            out += [f"  {_share(k, n)}  {name}" for name, k in functions]
    return "\n".join(out)


def thread_names(profile: Profile) -> dict[str, str]:
    """Thread id → Python thread name, from py-spy's 'thread (TID): NAME' frames."""
    names = {}
    for label in profile.threads:
        match = re.match(r"thread \((?:0x)?(\w+)\): ?(.*)", label)
        if match:
            names[match.group(1)] = match.group(2) or "?"
    return names


def render_threads(profile: Profile, thread_cores: dict[str, float]) -> str:
    """Measured CPU (from /proc) of each server thread during the profiled phase, named by py-spy."""
    names = thread_names(profile)
    out = ["server CPU by thread during the profiled peak (cores, from /proc/<pid>/task):"]
    out += [
        f"  {cores:5.2f}  {tid} {names.get(tid, '(no Python frames)')}" for tid, cores in thread_cores.items()
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(render(load(args.profile), args.top))


if __name__ == "__main__":
    main()
