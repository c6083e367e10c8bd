"""Every shell command in README.md and docs/*.md is run or checked: a renamed flag fails here, not in a workshop.

The convention (docs/workshop.md tells readers too): a fenced ```bash (sh, shell) block with no
marker runs for real on this CPU machine, in a temporary folder at a small size (`gdslab`
commands through `gdslab.cli.main`, the console script's own entry point, in this process;
`export` sets the environment; anything else by bash). A block whose leading comment lines hold
`# needs: gpu|aws|root|network|minutes` (comma-separated) is not run: the block must pass
`bash -n`, and each command of a tool installed here is parsed by that tool — `gdslab` and
`python -m gdslab.dist` by their argparse parsers, `torchrun` by torch's, `hf download` by the
real `hf` in offline dry-run mode, other `hf` and `python -m` commands against their `--help`,
`make` targets with `make -n`. Inline `gdslab …` / `torchrun …` code spans are parsed as well.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
NEEDS = {"gpu", "aws", "root", "network", "minutes"}
MARKER = re.compile(r"^#\s*needs:\s*([a-z]+(?:\s*,\s*[a-z]+)*)\s*(\(.*\))?\s*$")
SEPARATORS = {"|", "||", "&&", ";", "&", ";;"}
REDIRECTIONS = re.compile(r"^(\d*[<>]+&?|&>+)$")
KEYWORDS = {"if", "then", "else", "elif", "while", "until", "do", "!", "{"}
HOW_TO_MARK = ("a block that cannot run on a CPU machine needs a marker line '# needs: gpu' (or aws, root, "
               "network, minutes) among its first comment lines")


class CheckFailed(AssertionError):
    pass


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    text: str
    needs: frozenset[str]

    @property
    def where(self) -> str:
        return f"{_name(self.path)}:{self.line}"


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def shell_blocks(path: Path) -> list[Block]:
    """The fenced shell blocks of a markdown file, each with its `# needs:` marker (if any)."""
    found, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*```+\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        start, lang, body = i, m.group(1).lower(), []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        if lang not in SHELL:
            continue
        needs: set[str] = set()
        for text in body:
            if not text.startswith("#"):
                break
            marker = MARKER.match(text)
            if marker:
                words = {w.strip() for w in marker.group(1).split(",")}
                unknown = words - NEEDS
                if unknown:
                    raise CheckFailed(f"{_name(path)}:{start + 1}: unknown '# needs:' word(s) "
                                      f"{sorted(unknown)}; known: {sorted(NEEDS)}")
                needs |= words
        found.append(Block(path, start + 1, "\n".join(body) + "\n", frozenset(needs)))
    return found


BLOCKS = [b for doc in DOCS for b in shell_blocks(doc)]


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined and heredoc operators dropped (their bodies are shell here)."""
    out, pending, terminator = [], "", None
    for raw in text.splitlines():
        if terminator is not None and raw.strip() == terminator:
            terminator = None
            continue
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        heredoc = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
        if heredoc:
            terminator = heredoc.group(2)
            line = line[:heredoc.start()] + line[heredoc.end():]
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line)
    return out


def segments(line: str) -> list[list[str]]:
    """The simple commands of one line (split at pipes, && / || and ;), redirections cut off."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    tokens, found, current = list(lex), [], []
    for tok in tokens + [";"]:
        if tok in SEPARATORS:
            if current:
                found.append(current)
            current = []
        else:
            current.append(tok)
    cut = []
    for seg in found:
        for k, tok in enumerate(seg):
            if REDIRECTIONS.match(tok):
                seg = seg[:k - 1] if k and seg[k - 1].isdigit() else seg[:k]
                break
        if seg:
            cut.append(seg)
    return cut


def command_of(seg: list[str]) -> list[str]:
    """The command itself: shell keywords, VAR=value, sudo and its options, nohup, env and time dropped."""
    words = list(seg)
    while words:
        w = words[0]
        if w in KEYWORDS or w in ("nohup", "time", "exec", "env") or re.match(r"^[A-Za-z_]\w*=", w):
            words.pop(0)
        elif w == "sudo":
            words.pop(0)
            while words and words[0].startswith("-"):
                flag = words.pop(0)
                if flag in ("-u", "-g", "-C", "-D") and words:
                    words.pop(0)
        else:
            break
    return words


def tool_of(words: list[str]) -> str:
    return os.path.basename(words[0]) if words else ""


# ----------------------------------------------------------------------------- checks of one command


def _parse(parser, args: list[str], what: str) -> None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as e:
        if e.code:
            raise CheckFailed(f"{what}: {err.getvalue().strip().splitlines()[-1] if err.getvalue() else e}")


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]


def _help_check(prefix: list[str], args: list[str], what: str) -> None:
    """Every --flag of `args` appears in the --help of the longest subcommand prefix that has one."""
    words = []
    for a in args:
        if a.startswith("-"):
            break
        words.append(a)
    while True:
        run = subprocess.run(prefix + words + ["--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        if run.returncode == 0 or not words:
            break
        words.pop()
    if run.returncode != 0:
        raise CheckFailed(f"{what}: `{' '.join(prefix)} --help` failed: {run.stderr.strip()[-300:]}")
    text = run.stdout + run.stderr
    missing = [f for f in _flags(args) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    if missing:
        raise CheckFailed(f"{what}: {', '.join(missing)} not in `{' '.join(prefix + words)} --help`")


def _hf_download(args: list[str], what: str, tmp: Path) -> None:
    """The real hf parses the command: offline, dry run, paths under /fsx moved into `tmp`."""
    args = [a.replace("/fsx", str(tmp / "fsx")) for a in args]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_UPDATE_CHECK="1", NO_COLOR="1")
    run = subprocess.run([str(BIN / "hf"), "download", *args, "--dry-run"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp)
    said = run.stdout + run.stderr
    if run.returncode == 2 or "Usage:" in said:
        raise CheckFailed(f"{what}: hf rejects it: {said.strip()[-400:]}")
    if "Ignoring" in said:
        raise CheckFailed(f"{what}: hf ignores part of it: " + next(l for l in said.splitlines() if "Ignoring" in l))


def _module(args: list[str], what: str) -> None:
    """`-m MOD rest`: gdslab's own modules by their parsers, any other against its --help."""
    mod, rest = args[0], args[1:]
    if mod == "gdslab.dist":
        from gdslab.dist import build_parser

        _parse(build_parser(), rest, what)
    elif mod == "gdslab":
        from gdslab.cli import build_parser

        _parse(build_parser(), rest, what)
    else:
        _help_check([str(BIN / "python"), "-m", mod], rest, what)


def check_command(words: list[str], what: str, tmp: Path) -> str | None:
    """Check one command with its own tool; the tool's name, or None where no tool here can check it."""
    tool, args = tool_of(words), words[1:]
    if tool == "gdslab":
        from gdslab.cli import build_parser

        _parse(build_parser(), args, what)
    elif tool in ("python", "python3") and args[:1] == ["-m"] and len(args) > 1:
        _module(args[1:], what)
    elif tool == "torchrun":
        from torch.distributed.run import get_args_parser

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = get_args_parser().parse_args(args)
        except SystemExit:
            raise CheckFailed(f"{what}: torchrun rejects it: {err.getvalue().strip().splitlines()[-1]}")
        if ns.module:
            _module([ns.training_script, *ns.training_script_args], what)
    elif tool == "hf":
        if args[:1] == ["download"]:
            _hf_download(args[1:], what, tmp)
        else:
            _help_check([str(BIN / "hf")], args, what)
    elif tool == "make":
        run = subprocess.run(["make", "-n", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
        if run.returncode:
            raise CheckFailed(f"{what}: `make -n {' '.join(args)}` failed: {run.stderr.strip()[-300:]}")
    else:
        return None
    return tool


def commands(block: Block) -> list[list[str]]:
    return [c for line in logical_lines(block.text) for seg in segments(line) if (c := command_of(seg))]


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.needs], ids=lambda b: b.where)
def test_a_marked_block_is_valid_shell_and_its_tools_accept_it(block, tmp_path):
    syntax = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{block.where}: bash -n: {syntax.stderr.strip()}"
    for words in commands(block):
        check_command(words, f"{block.where}: `{' '.join(words)}`", tmp_path)


@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.needs], ids=lambda b: b.where)
def test_an_unmarked_block_runs_here(block, tmp_path, monkeypatch):
    from gdslab.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GDSLAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("GDSLAB_LAB_SIZE", "8MiB")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for line in logical_lines(block.text):
        segs = segments(line)
        words = command_of(segs[0]) if len(segs) == 1 else []
        what = f"{block.where}: `{line.strip()}`"
        if tool_of(words) == "gdslab":
            args = [os.path.expandvars(a) for a in words[1:]]
            try:
                rc = main(args)
            except SystemExit as e:
                rc = e.code
            assert not rc, f"{what} exited {rc} here; {HOW_TO_MARK}"
        elif words[:1] == ["export"]:
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                monkeypatch.setenv(name, os.path.expandvars(value))
        else:
            run = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert run.returncode == 0, f"{what} failed here ({run.stderr.strip()[-300:]}); {HOW_TO_MARK}"


INLINE = re.compile(r"`((?:gdslab|torchrun|python -m gdslab[\w.]*) [^`]+)`")


def inline_commands() -> list[tuple[str, str]]:
    """`gdslab …`, `torchrun …` and `python -m gdslab…` code spans in the prose (option lists excepted)."""
    found = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for span in INLINE.findall(line):
                if " | " in span or "…" in span:
                    continue  # a list of subcommands, or an elided one
                if len(span.split()) <= 2 and "-" not in span:
                    continue  # a name ("`gdslab load` takes ..."), not a command
                found.append((f"{doc.relative_to(ROOT)}:{n}", span.replace("[", "").replace("]", "")))
    return found


@pytest.mark.parametrize("where,span", inline_commands(), ids=lambda v: v if ":" in str(v) else None)
def test_an_inline_command_is_real_syntax(where, span, tmp_path):
    for seg in segments(span):
        check_command(command_of(seg), f"{where}: `{span}`", tmp_path)


def test_the_docs_give_the_check_something_to_check():
    """The extraction itself is not broken: the runbook's commands are found and most are checkable."""
    tools = [tool_of(c) for b in BLOCKS for c in commands(b)]
    assert sum(not b.needs for b in BLOCKS) >= 1, "no block runs here: the rehearsal block of docs/workshop.md?"
    assert tools.count("gdslab") >= 15, tools
    for tool in ("torchrun", "hf", "make", "python"):
        assert tool in tools, f"no {tool} command found in {[str(d.relative_to(ROOT)) for d in DOCS]}"
    assert len(inline_commands()) >= 3


@pytest.mark.parametrize("command,why", [
    ("gdslab load ckpt --checkpoint ckpt", "unrecognized arguments"),
    ("gdslab reshard src dst", "required: --tp"),
    ("torchrun --nproc-per-node 2 --no-such-flag -m gdslab.dist ckpt", "torchrun rejects"),
    ("torchrun --nproc-per-node 2 -m gdslab.dist ckpt --no-such-flag", "unrecognized arguments"),
    ("hf download meta-llama/Llama-3.1-8B-Instruct --include *.safetensors *.json --local-dir x",
     "ignores part of it"),
    ("hf auth login --no-such-flag", "not in"),
    ("python -m ipykernel install --no-such-flag", "not in"),
    ("make no-such-target", "make -n"),
])
def test_the_check_fails_on_a_command_that_is_not_real(command, why, tmp_path):
    """The oracle: commands known to be wrong (a flag that does not exist, the old hf form) are refused."""
    with pytest.raises(CheckFailed, match=re.escape(why)):
        check_command(command_of(segments(command)[0]), command, tmp_path)


def test_a_marker_is_read_from_the_leading_comments_only(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("```bash\n#!/bin/bash\n# needs: gpu, aws\nnvidia-smi\n# needs: root\n```\n"
                   "```bash\ngdslab env\n```\n```python\nprint(1)\n```\n")
    assert [sorted(b.needs) for b in shell_blocks(doc)] == [["aws", "gpu"], []]
    doc.write_text("```bash\n# needs: gpus\nnvidia-smi\n```\n")
    with pytest.raises(CheckFailed, match="unknown '# needs:' word"):
        shell_blocks(doc)
