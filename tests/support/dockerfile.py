"""A small Dockerfile reader for lint rules: instructions, stages, ARG substitution.

It follows the Dockerfile reference: ``\\`` continues a line, comment lines inside a
continued instruction are dropped, ``ARG`` before the first ``FROM`` supplies defaults
to ``FROM`` lines, and JSON arrays are the exec form.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON-array form's arguments, or None for the shell form."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = re.sub(r"^(--\S+\s+)*CMD\s+", "", text)
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    image: str  # after ARG substitution
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]
    instructions: list[Instruction]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        joined = " ".join(p.strip() for p in buf if p.strip())
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    if buf:
        raise ValueError(f"line {start}: instruction continues past the end of the file")
    return out


def _substitute(text: str, args: dict[str, str]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return args.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, text)


def parse(path: Path) -> Dockerfile:
    instrs = instructions(path.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instrs:
        if ins.keyword == "ARG" and not stages:
            name, _, default = ins.args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            image = _substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(image, name))
        elif stages:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages, instrs)


def apt_installs(run: Instruction) -> list[list[str]]:
    """The words of each ``apt-get install`` command in a RUN, one list per command."""
    out = []
    for command in re.split(r"&&|;|\|\|", run.args):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            out.append(words[2:])
    return out
