"""Every code example in the docs runs, as written, against the test server.

The pages are ``README.md``, ``docs/*.rst`` and the ``README.md`` files under
``benchmarks/``; one test per page, so a failure names the page and the line
of the block that failed. The convention a docs writer follows (repeated in
``docs/testing.rst``, "Testing async-db itself"):

- **Python runs.** ``.. code-block:: python`` (or ``py``, ``python3``, or no
  language), a literal block after ``::`` (Python unless the page's
  ``.. highlight::`` says otherwise) and, in Markdown, a ```` ```python ````
  fence are examples: they run.
- **One page, one namespace, one task.** The blocks of a page run in order in
  one namespace, inside one asyncio task on the test server, with the test
  suite's Django settings (``tests/fix_db.py``: aliases ``default``,
  ``other`` and ``pooled``). Top-level ``await``, ``async with`` and
  ``async for`` are allowed (compiled with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``).
  Connections the page used are released when its task ends, and the suite's
  leak checks apply.
- **Hidden blocks** (``sphinx.ext.doctest``'s directives, which render
  nothing): ``.. testsetup::`` runs before the page's first block (tables,
  rows, the functions an example assumes); ``.. testcode::`` with ``:hide:``
  runs in place, after the example above it (call the function it defines,
  serve its view, assert the result); ``.. testcleanup::`` runs last, also
  after a failure. In Markdown the same three are HTML comments, for example
  ``<!-- testsetup`` ... ``-->`` (code on the lines between).
- **Views and project files** run like the rest; ``tests.docs_site`` serves a
  page's ``urlpatterns`` or ASGI application in process through Django's own
  ``ASGIHandler`` (each request in a task of its own, as under uvicorn).
- **A standalone script** (a page whose example configures Django itself and
  calls ``asyncio.run``) is marked ``.. docs-test: script`` (an rst comment;
  Markdown: ``<!-- docs-test: script -->``): its blocks run as one script in a
  fresh interpreter, with no Django settings and the test server given in
  libpq's environment (``PGHOST``, ``PGPORT``, ``PGDATABASE``, ``PGUSER``,
  ``PGPASSWORD``, ``PGAPPNAME``); top-level ``await`` is a syntax error there,
  as in any script.
- **Not Python to run?** Say so with the block's language: ``.. code-block::
  bash`` (shell commands), ``text`` (output, a fragment shown out of
  context), ``sql``, ... (``NOT_RUN``). Nothing is skipped silently: a Python
  block that raises, an untagged Markdown fence, an unknown language, an
  interactive ``pycon`` session, or a directive this harness cannot run
  (``doctest``, ``testoutput``, ``literalinclude``) fails the page.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import os
import re
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Languages whose blocks run.
PYTHON = frozenset({"python", "py", "python3", "default"})
#: Languages whose blocks are shown, not run (the visible marker).
NOT_RUN = frozenset(
    {
        "bash",
        "sh",
        "shell",
        "console",
        "text",
        "none",
        "sql",
        "ini",
        "toml",
        "cfg",
        "json",
        "yaml",
        "diff",
        "rst",
        "html",
        "nginx",
        "dockerfile",
    }
)
#: Directives with code in them that this harness cannot run.
UNSUPPORTED = frozenset({"doctest", "testoutput", "literalinclude", "ipython"})
#: rst code directives (Sphinx's aliases).
CODE_DIRECTIVES = frozenset({"code-block", "code", "sourcecode"})
#: sphinx.ext.doctest directive -> the kind of block.
HIDDEN = {"testsetup": "setup", "testcleanup": "cleanup", "testcode": "code"}

SETUP, CODE, CHECK, CLEANUP = "setup", "code", "check", "cleanup"


@dataclass(frozen=True)
class Block:
    """One Python block to run: ``line`` is its first line in the page (1-based)."""

    path: Path
    line: int
    kind: str
    source: str

    @property
    def where(self) -> str:
        label = {SETUP: "setup", CODE: "example", CHECK: "hidden check"}.get(
            self.kind, "cleanup"
        )
        return f"{_rel(self.path)}, line {self.line} ({label} block)"


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)
    #: Blocks not run, by language (shown only: shell commands, output, ...).
    shown: list[tuple[int, str]] = field(default_factory=list)
    #: What the harness refuses (an untagged fence, ``pycon``, ...).
    errors: list[str] = field(default_factory=list)
    script: bool = False

    def ordered(self) -> tuple[list[Block], list[Block]]:
        """(setup blocks then the others in page order, cleanup blocks)."""
        setup = [b for b in self.blocks if b.kind == SETUP]
        body = [b for b in self.blocks if b.kind in (CODE, CHECK)]
        return setup + body, [b for b in self.blocks if b.kind == CLEANUP]


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# ##### Extraction #####

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([A-Za-z][\w:-]*)::(?:\s+(.*?))?\s*$")
_RST_SCRIPT = re.compile(r"^\.\.\s+docs-test:\s*script\s*$")
_MD_SCRIPT = re.compile(r"^\s*<!--\s*docs-test:\s*script\s*-->\s*$")
_MD_HIDDEN = re.compile(r"^\s*<!--\s*(testsetup|testcode|testcleanup)\s*$")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_body(lines: Sequence[str], start: int, indent: int) -> tuple[int, int]:
    """The lines after ``start`` (an index) indented deeper than ``indent``,
    blank lines included: ``(first, end)`` indices, trailing blanks dropped."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    last = end
    while last > start and not lines[last - 1].strip():
        last -= 1
    first = start
    while first < last and not lines[first].strip():
        first += 1
    return first, last


def _classify(page: Page, line: int, language: str, kind: str, source: str) -> None:
    language = language.lower()
    if language in PYTHON:
        page.blocks.append(Block(page.path, line, kind, source))
    elif language == "pycon":
        page.errors.append(
            f"line {line}: an interactive (pycon) session can't run: write it as "
            "a python block"
        )
    elif language in NOT_RUN:
        page.shown.append((line, language))
    else:
        page.errors.append(
            f"line {line}: unknown language {language!r}: use python to run it, or "
            f"one of {', '.join(sorted(NOT_RUN))} to show it"
        )


def parse_rst(path: Path, text: str) -> Page:
    page = Page(path)
    lines = text.splitlines()
    default = "python"
    i = 0
    while i < len(lines):
        line = lines[i]
        if _RST_SCRIPT.match(line):
            page.script = True
        match = _DIRECTIVE.match(line)
        if match is None:
            if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
                first, end = _indented_body(lines, i + 1, _indent(line))
                if first < end:
                    source = textwrap.dedent("\n".join(lines[first:end]))
                    _classify(page, first + 1, default, CODE, source)
                i = max(end, i + 1)
                continue
            i += 1
            continue
        indent, name, argument = _indent(line), match[2], match[3] or ""
        if name == "highlight":
            default = argument or "python"
        elif name in CODE_DIRECTIVES or name in HIDDEN:
            first, end = _indented_body(lines, i + 1, indent)
            options = []
            while first < end and lines[first].strip().startswith(":"):
                options.append(lines[first].strip())
                first += 1
            while first < end and not lines[first].strip():
                first += 1
            source = textwrap.dedent("\n".join(lines[first:end]))
            if name in CODE_DIRECTIVES:
                _classify(page, first + 1, argument or default, CODE, source)
            else:
                kind = HIDDEN[name]
                if name == "testcode" and ":hide:" in options:
                    kind = CHECK
                _classify(page, first + 1, "python", kind, source)
            i = max(end, i + 1)
            continue
        elif name in UNSUPPORTED:
            page.errors.append(
                f"line {i + 1}: '.. {name}::' can't run here: use a code-block "
                "(with hidden testcode checks)"
            )
        i += 1
    return page


def parse_markdown(path: Path, text: str) -> Page:
    page = Page(path)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _MD_SCRIPT.match(line):
            page.script = True
            i += 1
            continue
        hidden = _MD_HIDDEN.match(line)
        if hidden:
            end = i + 1
            while end < len(lines) and lines[end].strip() != "-->":
                end += 1
            if end == len(lines):
                page.errors.append(f"line {i + 1}: unclosed <!-- {hidden[1]}")
            source = textwrap.dedent("\n".join(lines[i + 1 : end]))
            kind = {"testsetup": SETUP, "testcleanup": CLEANUP}.get(hidden[1], CHECK)
            _classify(page, i + 2, "python", kind, source)
            i = end + 1
            continue
        fence = _FENCE.match(line)
        if fence:
            marker, language = fence[2], fence[3]
            end = i + 1
            while end < len(lines) and not (
                lines[end].strip().startswith(marker)
                and set(lines[end].strip()) == {marker[0]}
            ):
                end += 1
            if end == len(lines):
                page.errors.append(f"line {i + 1}: unclosed code fence")
            if not language:
                page.errors.append(
                    f"line {i + 1}: a code fence without a language: tag it "
                    "(python runs; bash, text, ... are shown only)"
                )
            else:
                source = textwrap.dedent("\n".join(lines[i + 1 : end]))
                _classify(page, i + 2, language, CODE, source)
            i = end + 1
            continue
        i += 1
    return page


def parse(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return parse_markdown(path, text)
    return parse_rst(path, text)


def pages() -> list[Path]:
    """Every documentation page with examples the harness must run."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
    found += sorted((ROOT / "benchmarks").glob("**/README.md"))
    return [p for p in found if "_build" not in p.parts]


# ##### Running #####


class ExampleFailed(AssertionError):
    """A block of a page raised: the message names the page and the line."""


def _compile(block: Block, *, top_level_await: bool) -> Any:
    # Padding keeps the page's line numbers, so tracebacks point into the page
    # (and linecache shows the page's own line).
    source = "\n" * (block.line - 1) + block.source
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if top_level_await else 0
    return compile(source, str(block.path), "exec", flags=flags, dont_inherit=True)


def _failure(block: Block, exc: BaseException) -> ExampleFailed:
    if isinstance(exc, SyntaxError) and exc.filename == str(block.path):
        line = exc.lineno
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if f.filename == str(block.path)]
        line = ours[-1].lineno if ours else None
    where = f"{block.where}, failed at line {line}" if line else block.where
    return ExampleFailed(f"{where}: {type(exc).__name__}: {exc}")


async def run_block(block: Block, namespace: dict[str, Any]) -> None:
    try:
        code = _compile(block, top_level_await=True)
        result = eval(code, namespace)
        if code.co_flags & inspect.CO_COROUTINE:
            await result
    except Exception as exc:
        raise _failure(block, exc) from exc


async def run_page(page: Page, namespace: dict[str, Any] | None = None) -> int:
    """Run the page's blocks in one namespace; return how many ran."""
    if namespace is None:
        namespace = {}
    namespace.setdefault("__name__", f"docs_{page.path.stem.replace('-', '_')}")
    namespace.setdefault("__builtins__", builtins)
    body, cleanup = page.ordered()
    ran = 0
    failed: ExampleFailed | None = None
    try:
        for block in body:
            await run_block(block, namespace)
            ran += 1
    except ExampleFailed as exc:
        failed = exc
    for block in cleanup:
        try:
            await run_block(block, namespace)
        except ExampleFailed as exc:
            if failed is None:
                raise
            # The example's own failure is the one to report.
            failed.add_note(f"and then: {exc}")
        ran += 1
    if failed is not None:
        raise failed
    return ran


def run_script(path: Path) -> int:
    """Script mode, in a fresh interpreter (``python -W error -m
    tests.test_docs_examples PAGE``): the blocks run as one script, in order,
    in ``__main__``'s namespace, the cleanup blocks also after a failure;
    exit status 1 and the failure on stderr if a block raises."""
    body, cleanup = parse(path).ordered()
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    ran, status = 0, 0

    def run(block: Block) -> bool:
        try:
            exec(_compile(block, top_level_await=False), namespace)
        except Exception as exc:
            traceback.print_exception(exc)
            print(f"docs-test: {_failure(block, exc)}", file=sys.stderr)
            return False
        return True

    for block in body:
        if not run(block):
            status = 1
            break
        ran += 1
    for block in cleanup:
        if run(block):
            ran += 1
        else:
            status = 1
    if status == 0:
        print(f"docs-test: ran {ran} blocks", flush=True)
    return status


#: Not passed to a script: it configures its own Django and database.
_NOT_INHERITED = ("ASYNC_DB_DSN", "DJANGO_SETTINGS_MODULE")


def _libpq_environment(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    from tests.fix_db import TEST_APP_NAME

    params = conninfo_to_dict(dsn)
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "dbname": "PGDATABASE",
        "user": "PGUSER",
        "password": "PGPASSWORD",
    }
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PG") and key not in _NOT_INHERITED
    }
    env.update({names[k]: str(v) for k, v in params.items() if k in names})
    env["PGAPPNAME"] = TEST_APP_NAME
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env


# ##### The tests #####


def _page_id(path: Path) -> str:
    return _rel(path)


@pytest.mark.parametrize("path", pages(), ids=_page_id)
async def test_page_examples_run(path: Path, dsn: str, global_pools: None) -> None:
    """The page's Python blocks run as written (see the module docstring)."""
    from tests import docs_site

    page = parse(path)
    assert not page.errors, f"{_rel(path)}: " + "; ".join(page.errors)
    if page.script:
        result = await asyncio.to_thread(
            subprocess.run,
            # Warnings are errors there too, as in the suite.
            [
                sys.executable,
                "-W",
                "error",
                "-m",
                "tests.test_docs_examples",
                str(path),
            ],
            cwd=ROOT,
            env=_libpq_environment(dsn),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"{_rel(path)} (script mode) failed:\n{result.stdout}{result.stderr}"
        )
        ran = len(page.blocks)
        assert f"docs-test: ran {ran} blocks" in result.stdout, result.stdout
        return
    docs_site.DSN = dsn
    ran = await asyncio.create_task(run_page(page))
    assert ran == len(page.blocks)


# ##### The harness's own tests (no server) #####

_RST_SAMPLE = """\
Title
=====

.. testsetup::

   value = 1

Text::

    value += 1

.. code-block:: bash

    pip install .

.. testcode::
   :hide:

   assert value == 2

.. note::

   Inside a note::

       value += 10

.. code-block:: python
   :caption: shown

   value *= 2

.. testcleanup::

   del value
"""


def test_rst_extraction_finds_every_block_with_its_line() -> None:
    page = parse_rst(Path("sample.rst"), _RST_SAMPLE)
    assert not page.errors
    found = [(b.line, b.kind, b.source) for b in page.blocks]
    assert found == [
        (6, SETUP, "value = 1"),
        (10, CODE, "value += 1"),
        (19, CHECK, "assert value == 2"),
        (25, CODE, "value += 10"),
        (30, CODE, "value *= 2"),
        (34, CLEANUP, "del value"),
    ]
    assert page.shown == [(14, "bash")]


def test_rst_highlight_and_refusals() -> None:
    text = (
        ".. highlight:: bash\n\nRun::\n\n    make\n\n"
        ".. code-block:: pycon\n\n    >>> 1\n\n"
        ".. code-block:: cobol\n\n    DISPLAY 1\n\n"
        ".. doctest::\n\n    >>> 1\n    1\n"
    )
    page = parse_rst(Path("x.rst"), text)
    assert page.blocks == [] and page.shown == [(5, "bash")]
    assert [e.split(":")[0] for e in page.errors] == ["line 9", "line 13", "line 15"]


def test_markdown_extraction_hidden_blocks_and_untagged_fences() -> None:
    text = (
        "<!-- docs-test: script -->\n"
        "<!-- testsetup\nx = 1\n-->\n"
        "```python\nx += 1\n```\n"
        "```bash\nls\n```\n"
        "<!-- testcode\nassert x == 2\n-->\n"
        "```\nout\n```\n"
    )
    page = parse_markdown(Path("x.md"), text)
    assert page.script
    found = [(b.line, b.kind) for b in page.blocks]
    assert found == [(3, SETUP), (6, CODE), (12, CHECK)]
    assert page.shown == [(9, "bash")]
    assert page.errors == [
        "line 14: a code fence without a language: tag it (python runs; bash, "
        "text, ... are shown only)"
    ]


async def test_a_failing_block_names_its_page_and_line(tmp_path: Path) -> None:
    path = tmp_path / "page.rst"
    path.write_text(
        "Intro::\n\n    import asyncio\n\n    await asyncio.sleep(0)\n    1 / 0\n"
    )
    page = parse(path)
    with pytest.raises(
        ExampleFailed,
        match=r"page.rst, line 3 \(example block\), "
        r"failed at line 6: ZeroDivisionError",
    ):
        await run_page(page)


async def test_blocks_share_a_namespace_and_cleanup_runs_after_a_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "page.rst"
    path.write_text(
        "Two::\n\n    raise RuntimeError(log)\n\n"
        ".. testcleanup::\n\n   cleaned = True\n\n"
        "One (the setup runs first)\n\n"
        ".. testsetup::\n\n   import asyncio\n   log = [await asyncio.sleep(0, 1)]\n"
    )
    namespace: dict[str, Any] = {}
    with pytest.raises(ExampleFailed, match=r"line 3 .*RuntimeError: \[1\]"):
        await run_page(parse(path), namespace)
    assert namespace["cleaned"] is True


def test_script_mode_reports_the_failing_line_and_still_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "page.md"
    path.write_text(
        "<!-- docs-test: script -->\n"
        "```python\nimport sys\nsys.modules[__name__].__dict__\nx = {}[1]\n```\n"
        "<!-- testcleanup\nprint('cleaned up')\n-->\n"
    )
    assert run_script(path) == 1
    out, err = capsys.readouterr()
    assert out == "cleaned up\n"
    assert "page.md, line 3 (example block), failed at line 5: KeyError: 1" in err


def _iter_args(argv: Sequence[str]) -> Iterator[Path]:
    for arg in argv:
        yield Path(arg).resolve()


if __name__ == "__main__":
    sys.exit(max((run_script(path) for path in _iter_args(sys.argv[1:])), default=0))
