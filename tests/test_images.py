"""Reproducible images: each installs from a hash-pinned lock, on a base image pinned by digest.

Fast checks read the files only:

* one Dockerfile, ``images/Dockerfile``, builds every image (``--build-arg IMAGE=<name>`` picks the lock
  ``images/<name>/requirements.lock`` and the final stage, the stage named ``<name>``); each image it builds (a
  stage with an ``ENTRYPOINT``) has its folder, lock and entry in ``images/lock.py``, and nothing else does;
* every lock entry is ``name==version`` with ``--hash=sha256:`` lines, nothing unpinned, no URLs or indexes;
* every lock is fresh (``python images/lock.py --check``), and that check notices dependency edits;
* every ``FROM`` of a base image is ``image:tag@sha256:<64 hex>``; each image's stages install dependencies only
  with ``--require-hashes -r requirements.lock`` (its own lock), the project ``--no-deps --no-build-isolation``,
  then ``pip check``; the locks are let through the build context's ``.dockerignore``;
* the lock covers every runtime requirement of pyproject.toml (dependencies + the image's extras) at a
  version the requirement admits.

Slow checks (``slow``) build each image's build stages as a fresh venv of this machine's Python 3.12, by
running the Dockerfile's own ``COPY``/``RUN python -m venv``/``RUN pip …``/``RUN raw2ready …`` instructions
against a copy of the build context (what ``.dockerignore`` lets through), with one deliberate difference:
the locked files are first fetched (``pip download --require-hashes``, through this machine's pip
configuration) into a kept wheelhouse, ``~/.cache/raw2ready/image-wheels``, and the install reads only from
there (``--no-index --find-links``), so that a second run does not download again; the compiled cloud model
is kept in ``~/.cache/raw2ready/image-model`` (the image's ``/opt/raw2ready-cache``). In the venvs:

* steps image: every command and step entrypoint answers ``--help`` (the list comes from the CLI and the
  step registry, in the venv), every module imports (but the EDR server's, which need the ``serve`` extra),
  and ``raw2ready run`` processes a tiny synthetic scene with the precompiled cloud model, then
  ``raw2ready validate`` accepts the catalog;
* pygeoapi image: every module imports and the image's default command (``raw2ready serve …``) serves that
  catalog over HTTP on loopback.

What only a Docker build shows: the Debian packages (``libgomp1``), the base image's own Python build and
file ownership; the venvs here use this machine's CPython 3.12 and system libraries.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from r2r_helpers import SMALL, _free_port

ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = ROOT / "images"
DOCKERFILE = IMAGES_DIR / "Dockerfile"  # every image: --build-arg IMAGE=<name>
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raw2ready"
WHEELHOUSE = CACHE_ROOT / "image-wheels"  # the locked files, downloaded once (safe to delete)
MODEL_CACHE = CACHE_ROOT / "image-model"  # stands in for the image's RAW2READY_CACHE_DIR (/opt/raw2ready-cache)
_HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})$")
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def _load_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("images_lock", IMAGES_DIR / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = _load_lock_module()


def _norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------ lock-file parsing
@dataclass
class Pin:
    """One requirement of a lock: the line as written, its name/version and its hashes."""

    line: str
    name: str
    version: str
    hashes: list[str]


def logical_lines(path: Path, *, trailing_comments: bool) -> list[str]:
    """The lines of a requirements file or Dockerfile with ``\\`` continuations joined.

    Whole-line comments and blank lines are dropped; with ``trailing_comments`` a `` #`` comment after the text
    is dropped too (requirements files allow it, a Dockerfile instruction does not).
    """
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        text = raw.split(" #", 1)[0].strip() if trailing_comments else raw.strip()
        if not text:
            continue
        buf = f"{buf} {text}".strip()
        if buf.endswith("\\"):
            buf = buf[:-1].strip()
            continue
        logical.append(buf)
        buf = ""
    assert not buf, f"{path}: the last line ends with a line continuation"
    return logical


def parse_lock(path: Path) -> list[Pin]:
    """The requirements of a pip requirements file with continuation lines; comments dropped."""
    logical = logical_lines(path, trailing_comments=True)
    pins: list[Pin] = []
    for line in logical:
        head, *opts = line.split()
        m = _PIN_RE.match(head)
        assert m, f"{path.name}: {head!r} is not pinned as name==version (line: {line[:120]})"
        hashes = []
        for opt in opts:
            h = _HASH_RE.match(opt)
            assert h, f"{path.name}: {m.group(1)}: unexpected option {opt!r} (only --hash=sha256:<64 hex>)"
            hashes.append(h.group(1))
        pins.append(Pin(line, _norm(m.group(1)), m.group(2), hashes))
    return pins


# ------------------------------------------------------------------------------------ Dockerfile parsing
@dataclass
class Stage:
    """One stage of a Dockerfile: its FROM line and the instructions after it (continuations joined)."""

    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def env(self) -> dict[str, str]:
        """Values of its ENV instructions (``KEY=value`` form), later ones winning."""
        out: dict[str, str] = {}
        for kw, args in self.instructions:
            if kw == "ENV":
                out.update(env_pairs(args))
        return out


def env_pairs(args: str) -> dict[str, str]:
    """The ``KEY=value`` pairs of one ENV instruction."""
    return dict(tok.partition("=")[::2] for tok in shlex.split(args))


def parse_dockerfile(path: Path = DOCKERFILE, image: str | None = None) -> list[Stage]:
    """Stages of a Dockerfile (comments and parser directives dropped, ``\\`` continuations joined).

    With ``image``: ``${IMAGE}`` replaced by it (as ``--build-arg IMAGE=<image>``); only ``ARG`` may come before
    the first ``FROM``.
    """
    lines = logical_lines(path, trailing_comments=False)
    stages: list[Stage] = []
    for line in lines:
        if image is not None:
            line = line.replace("${IMAGE}", image)
        kw, _, args = line.partition(" ")
        kw = kw.upper()
        if kw == "FROM":
            parts = args.split()
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], alias))
        else:
            assert stages or kw == "ARG", f"{path}: {kw} before the first FROM"
            if stages:
                stages[-1].instructions.append((kw, args))
    return stages


def image_names() -> list[str]:
    """The images ``images/Dockerfile`` builds: its stages with an ``ENTRYPOINT``."""
    return sorted(s.alias for s in parse_dockerfile() if s.alias and any(kw == "ENTRYPOINT" for kw, _ in
                                                                          s.instructions))


def image_stages(image: str) -> list[Stage]:
    """The stages ``--build-arg IMAGE=<image>`` builds, in file order (the image's own stage last): the stage
    named ``image``, what it is ``FROM`` and what it copies ``--from``, recursively."""
    stages = parse_dockerfile(image=image)
    by_name = {s.alias: s for s in stages if s.alias}
    assert stages[-1].base == image and stages[-1].instructions == [], \
        "the last stage is `FROM ${IMAGE}`: the image IMAGE names"
    needed: set[str] = set()
    todo = [image]
    while todo:
        name = todo.pop()
        if name in by_name and name not in needed:
            needed.add(name)
            st = by_name[name]
            todo += [st.base] + [a.split("=", 1)[1] for kw, args in st.instructions if kw == "COPY"
                                 for a in args.split() if a.startswith("--from=")]
    chain = [s for s in stages if s.alias in needed]
    assert chain[-1].alias == image, f"the stage {image!r} must come after the stages it needs"
    return chain


IMAGE_NAMES = image_names()


def _run_segments(args: str) -> list[list[str]]:
    """The commands of one ``RUN`` (shell form), split on ``&&``."""
    return [shlex.split(seg) for seg in args.split("&&") if seg.strip()]


def _dockerignore() -> tuple[list[str], list[str]]:
    """(paths let through, exclusion globs) of ``<Dockerfile>.dockerignore`` (a ``*`` + ``!path`` allow-list)."""
    lines = [ln.strip() for ln in (IMAGES_DIR / "Dockerfile.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "the build context is an allow-list: '*' first, then '!path' lines"
    return [ln[1:].rstrip("/") for ln in lines[1:] if ln.startswith("!")], [ln for ln in lines[1:]
                                                                           if not ln.startswith("!")]


def _in_context(rel: str) -> bool:
    allowed, excluded = _dockerignore()
    ok = any(rel == a or rel.startswith(a + "/") for a in allowed)
    # Docker's "**" also matches no folder at all: steps/**/__pycache__ covers steps/__pycache__
    globs = {g for pat in excluded for g in (pat, pat.replace("/**/", "/"))}
    return ok and not any(fnmatch.fnmatch(rel, g) for g in globs)


# ======================================================================================== fast checks
def test_every_image_folder_has_a_lock_and_an_entry_in_lock_py() -> None:
    assert set(IMAGE_NAMES) == {"steps", "pygeoapi"}, "images/Dockerfile: a stage with an ENTRYPOINT per image"
    assert set(IMAGE_NAMES) == set(LOCK.IMAGES), "images/lock.py IMAGES must list exactly the images of the Dockerfile"
    assert LOCK.dockerfile_images() == IMAGE_NAMES
    folders = {p.name for p in IMAGES_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders == set(IMAGE_NAMES), "images/<name>/ holds the lock of image <name>, and nothing else is a folder"
    assert not list(IMAGES_DIR.glob("*/Dockerfile*")), "one Dockerfile (images/Dockerfile) builds every image"
    for image in IMAGE_NAMES:
        assert (IMAGES_DIR / image / "requirements.lock").is_file(), f"images/{image}/requirements.lock: run make lock"


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_every_locked_requirement_is_pinned_with_sha256_hashes(image: str) -> None:
    lock = IMAGES_DIR / image / "requirements.lock"
    text = lock.read_text()
    assert "--hash=sha256:" in text
    assert not re.search(r"(?m)^\s*(-e|--index-url|--extra-index-url|-i|--find-links|-f)\b", text), \
        "a lock must not carry editable installs or index options (pip's own configuration decides the index)"
    pins = parse_lock(lock)
    assert len(pins) > 20, f"{len(pins)} requirements: is this the whole dependency tree?"
    names = [p.name for p in pins]
    assert len(names) == len(set(names)), "a distribution is pinned twice"
    assert "raw2ready" not in names, "the project itself is installed from the source tree, not from the lock"
    for p in pins:
        assert p.hashes, f"{image}: {p.name}=={p.version} has no --hash line"
        assert len(p.hashes) == len(set(p.hashes)), f"{image}: {p.name} repeats a hash"


def test_locks_match_pyproject() -> None:
    res = subprocess.run([sys.executable, str(IMAGES_DIR / "lock.py"), "--check"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, f"stale image locks (run `make lock`):\n{res.stderr}"


def test_lock_check_fails_when_a_dependency_changes_without_make_lock(tmp_path: Path) -> None:
    """A copy of the repository's lock inputs: a dependency edit makes --check fail; a comment or dev edit does not."""
    (tmp_path / "images").mkdir()
    shutil.copy(IMAGES_DIR / "lock.py", tmp_path / "images" / "lock.py")
    shutil.copy(DOCKERFILE, tmp_path / "images" / "Dockerfile")
    for image in IMAGE_NAMES:
        (tmp_path / "images" / image).mkdir()
        shutil.copy(IMAGES_DIR / image / "requirements.lock", tmp_path / "images" / image / "requirements.lock")
    pyproject = (ROOT / "pyproject.toml").read_text()

    def check(text: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "pyproject.toml").write_text(text)
        return subprocess.run([sys.executable, str(tmp_path / "images" / "lock.py"), "--check"],
                              capture_output=True, text=True, timeout=60, check=False)

    assert check(pyproject).returncode == 0
    harmless = pyproject.replace("dev = [", "# a comment\ndev = [\n    \"some-dev-tool>=1\",", 1)
    assert harmless != pyproject and check(harmless).returncode == 0, "dev-only edits must not stale the locks"
    changed = pyproject.replace("\ndependencies = [", '\ndependencies = [\n    "humanize>=4",', 1)
    assert changed != pyproject
    res = check(changed)
    assert res.returncode == 1
    for image in IMAGE_NAMES:  # every image installs the project's dependencies
        assert f"images/{image}/requirements.lock is stale" in res.stderr
    assert "make lock" in res.stderr
    serve_only = pyproject.replace("\nserve = [", '\nserve = ["humanize>=4", ', 1)
    assert serve_only != pyproject
    res = check(serve_only)
    assert res.returncode == 1 and "images/pygeoapi/requirements.lock is stale" in res.stderr
    assert "images/steps/" not in res.stderr, "the steps image does not install the serve extra"


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_every_base_image_is_pinned_by_digest(image: str) -> None:
    stages = image_stages(image)
    aliases = {s.alias for s in stages if s.alias}
    external = [s.base for s in stages if s.base not in aliases]
    assert external
    assert [s.alias for s in stages if s.base not in aliases] == [stages[0].alias], "one base stage, first"
    for base in external:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}", base), \
            f"{base}: pin the base as name:version@sha256:<digest> (docs/IMAGES.md)"
    # one base for every stage: the venv built in one stage runs on the interpreter of the other
    assert len(set(external)) == 1, external


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_dockerfile_installs_dependencies_only_from_its_hashed_lock(image: str) -> None:
    stages = image_stages(image)
    copies = [args.split() for s in stages for kw, args in s.instructions if kw == "COPY"]
    locks = [c for c in copies if c[0].endswith("requirements.lock")]
    assert locks == [[f"images/{image}/requirements.lock", "./"]], "the image's own lock, copied into its build"
    assert _in_context(f"images/{image}/requirements.lock"), \
        "images/Dockerfile.dockerignore keeps the lock out of the build context"
    pip_cmds = [argv for s in stages for kw, args in s.instructions if kw == "RUN"
                for argv in _run_segments(args) if argv[0] == "pip"]
    installs = [argv for argv in pip_cmds if argv[1] == "install"]
    from_lock = [argv for argv in installs if "-r" in argv]
    assert len(from_lock) == 1, installs
    assert "--require-hashes" in from_lock[0] and from_lock[0][from_lock[0].index("-r") + 1] == "requirements.lock"
    others = [argv for argv in installs if argv is not from_lock[0]]
    assert others, "the project itself is installed after its dependencies"
    for argv in others:  # nothing resolved or downloaded outside the lock
        assert "--no-deps" in argv and "--no-build-isolation" in argv, argv
    assert ["pip", "check"] in pip_cmds, "pip check proves the lock satisfies every installed requirement"
    assert installs.index(from_lock[0]) < installs.index(others[0])


def _requirements_for(image: str) -> list[Any]:
    from packaging.requirements import Requirement

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"]) + list(data["build-system"]["requires"])
    for extra in LOCK.IMAGES[image]:
        reqs += data["project"]["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_lock_covers_every_runtime_requirement_of_the_image(image: str) -> None:
    """Each dependency (+ the image's extras, + the build backend) is locked at a version it admits."""
    pins = {p.name: p.version for p in parse_lock(IMAGES_DIR / image / "requirements.lock")}
    target = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
              "python_version": "3.12", "python_full_version": "3.12.14", "implementation_name": "cpython",
              "os_name": "posix"}
    missing, wrong = [], []
    for req in _requirements_for(image):
        if req.marker is not None and not req.marker.evaluate(target):
            continue
        name = _norm(req.name)
        if name not in pins:
            missing.append(str(req))
        elif not req.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{req} (locked {pins[name]})")
    assert not missing, f"not in images/{image}/requirements.lock: {missing} (run make lock)"
    assert not wrong, f"locked versions outside pyproject's ranges: {wrong}"


def test_lock_header_records_the_image_extras() -> None:
    for image in IMAGE_NAMES:
        head = (IMAGES_DIR / image / "requirements.lock").read_text().split("\n", 8)[:8]
        extras = next(ln for ln in head if ln.startswith("# extras: "))
        assert extras == f"# extras: {', '.join(LOCK.IMAGES[image]) or '(none)'}"


# ======================================================================================== slow checks
@dataclass
class ImageVenv:
    """A venv built like an image's build stage."""

    image: str
    venv: Path
    src: Path  # stands in for the build stage's WORKDIR (/src)
    env: dict[str, str]  # runtime environment: the final stage's ENV, paths mapped to this machine
    final: Stage
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the venv's ``raw2ready`` console script (the images' ENTRYPOINT)."""
        return subprocess.run([str(self.venv / "bin" / "raw2ready"), *args], capture_output=True, text=True,
                              env=self.env, cwd=cwd or self.src.parent, timeout=timeout, check=False)

    def python(self, code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code`` in the venv, outside the repository (so the source tree is not importable)."""
        return subprocess.run([str(self.venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                              env=self.env, cwd=self.src.parent, timeout=timeout, check=False)


def _base_python() -> str:
    """This machine's CPython 3.12 (the interpreter behind the test venv); the images run 3.12."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    res = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                         text=True, check=True)
    if res.stdout.strip() != LOCK.PYTHON_VERSION:
        pytest.fail(f"{exe} is Python {res.stdout.strip()}; the image locks target {LOCK.PYTHON_VERSION}")
    return exe


def _map_env(env: dict[str, str]) -> dict[str, str]:
    """An image ENV on this machine: RAW2READY_CACHE_DIR → MODEL_CACHE; PATH and HOME stay this machine's."""
    out = {k: v for k, v in env.items() if k not in ("PATH", "HOME")}
    if "RAW2READY_CACHE_DIR" in out:
        out["RAW2READY_CACHE_DIR"] = str(MODEL_CACHE)
    return out


def build_image_venv(image: str, workdir: Path) -> ImageVenv:
    """Replay the stages ``images/Dockerfile`` builds for ``image`` before its own (the shared base, the build,
    the steps image's model compile): COPY from the build context, venv, pip, raw2ready."""
    *builds, final = image_stages(image)
    assert builds and all(s.alias for s in builds), "expected build stages before the image's own"
    assert all(a.startswith("--from=") for kw, args in final.instructions if kw == "COPY" for a in args.split()[:1]), \
        "the image's own stage only copies from the build stages"
    venv, src = workdir / "venv", workdir / "src"
    src.mkdir()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAW2READY_", "VIRTUAL_ENV", "PYTHON"))}
    env: dict[str, str] = dict(base_env)
    timings: dict[str, float] = {}

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(ROOT).as_posix()
        return {n for n in names if not _in_context(f"{rel}/{n}")}

    workdir = "/"
    for kw, args in (ins for stage in builds for ins in stage.instructions):
        if kw == "WORKDIR":
            workdir = args
        elif kw == "ARG":  # IMAGE: already replaced by parse_dockerfile
            assert args == "IMAGE", args
        elif kw == "ENV":  # in order: a RUN sees the ENV lines above it only
            env.update(_map_env(env_pairs(args)))
        elif kw == "COPY":
            *sources, dest = args.split()
            assert not any(s.startswith("--") for s in sources), args
            assert workdir == "/src", "the replay maps WORKDIR /src onto a temporary folder"
            for s in sources:
                assert _in_context(s), f"COPY {s}: not in the build context (Dockerfile.dockerignore)"
                target = src / dest / Path(s).name if dest.endswith("/") or len(sources) > 1 else src / dest
                if (ROOT / s).is_dir():
                    shutil.copytree(ROOT / s, target, ignore=ignore)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / s, target)
        elif kw == "RUN":
            for argv in _run_segments(args):
                assert argv[0] != "pip" or workdir == "/src", f"{shlex.join(argv)}: the replay runs pip in /src"
                _replay(argv, venv=venv, src=src, env=env, timings=timings)
        else:
            raise AssertionError(f"the replay does not know build-stage instruction {kw} {args}")
    by_name = {s.alias: s for s in builds}
    bases = [final]  # the image's stage and the stages it is FROM: their ENV is the image's
    while bases[-1].base in by_name:
        bases.append(by_name[bases[-1].base])
    image_env = {k: v for stage in reversed(bases) for k, v in stage.env().items()}
    runtime_env = {**base_env, **_map_env(image_env), "PATH": f"{venv / 'bin'}{os.pathsep}{base_env.get('PATH', '')}"}
    return ImageVenv(image, venv, src, runtime_env, final, timings)


def _wheelhouse_has(pins: list[Pin]) -> bool:
    """Whether the wheelhouse holds, for every pin, a file with one of its hashes (else: download)."""
    import hashlib

    present = set()
    for f in WHEELHOUSE.iterdir():
        with f.open("rb") as fh:
            present.add(hashlib.file_digest(fh, "sha256").hexdigest())
    return all(present & set(p.hashes) for p in pins)


_SYSTEM_PROGRAMS = ("apt-get", "rm", "groupadd", "useradd")
"""Commands of a RUN that set up the image's system (Debian packages, users): not replayed."""


def _replay(argv: list[str], *, venv: Path, src: Path, env: dict[str, str], timings: dict[str, float]) -> None:
    """One command of a RUN: venv creation, pip, raw2ready; system-package commands are the image's business."""
    prog = argv[0]
    t0 = time.monotonic()
    if prog in _SYSTEM_PROGRAMS:
        return  # Debian packages and users of the image; this machine has its own (libgomp1 included)
    if argv[:3] == ["python", "-m", "venv"]:
        cmd = [_base_python(), "-m", "venv", str(venv)]
    elif prog in ("pip", "raw2ready"):
        cmd = [str(venv / "bin" / prog), *argv[1:]]
    else:
        raise AssertionError(f"the replay does not know how to run {shlex.join(argv)!r} from a RUN line")
    run_env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    if argv[:2] == ["pip", "install"] and "-r" in argv:
        # The one deliberate difference from the Dockerfile: the locked files are fetched (through this
        # machine's pip configuration, hashes checked) into a kept wheelhouse, and the install reads only
        # from there, so a second run does not download ~300 MB again. Hash checking is pip's either way.
        reqs = argv[argv.index("-r") + 1]
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        if not _wheelhouse_has(parse_lock(src / reqs)):  # pip download re-reads every index page: ~40 s
            dl = subprocess.run([str(venv / "bin" / "pip"), "download", "--require-hashes", "-r", reqs,
                                 "-d", str(WHEELHOUSE)], cwd=src, env=run_env, capture_output=True, text=True,
                                timeout=1800, check=False)
            assert dl.returncode == 0, f"pip download of {reqs} failed:\n{dl.stdout[-3000:]}\n{dl.stderr[-3000:]}"
            timings[f"pip download -r {reqs}"] = time.monotonic() - t0
        t0 = time.monotonic()
        cmd += ["--no-index", "--find-links", str(WHEELHOUSE)]
    res = subprocess.run(cmd, cwd=src, env=run_env, capture_output=True, text=True, timeout=1200, check=False)
    assert res.returncode == 0, \
        f"{shlex.join(argv)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    timings[shlex.join(argv)] = time.monotonic() - t0


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ImageVenv]:
    """``image_venv(name)``: that image's venv, built once per module run (timings printed)."""
    made: dict[str, ImageVenv] = {}

    def get(image: str) -> ImageVenv:
        if image not in made:
            t0 = time.monotonic()
            made[image] = iv = build_image_venv(image, tmp_path_factory.mktemp(f"image-{image}"))
            steps_txt = "; ".join(f"{k[:60]}: {v:.1f} s" for k, v in iv.timings.items())
            print(f"\n[image {image}] venv built in {time.monotonic() - t0:.1f} s ({steps_txt})")
        return made[image]

    return get


_WALK = r"""
import json, click, steps, steps.cli as cli
from click.testing import CliRunner
from steps.pipeline.registry import STEPS

def walk(cmd, path, ctx):
    out = [path]
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                out += walk(sub, path + [name], click.Context(sub, parent=ctx, info_name=name))
    return out

fields = {n: [f.replace("_", "-") for f in s.Inputs.model_fields] for n, s in STEPS.items()}
paths = walk(cli.main, [], click.Context(cli.main, info_name="raw2ready"))
runner = CliRunner()
helps = []
for path in paths:  # in one process: a console script per command costs ~2 s of imports each
    r = runner.invoke(cli.main, [*path, "--help"], prog_name="raw2ready")
    helps.append([path, r.exit_code, r.output])
print(json.dumps({"file": steps.__file__, "steps": fields, "helps": helps}))
"""

_IMPORT_ALL = r"""
import importlib, json, pkgutil, steps
failed = {}
for m in pkgutil.walk_packages(steps.__path__, "steps."):
    try:
        importlib.import_module(m.name)
    except ModuleNotFoundError as exc:
        failed[m.name] = exc.name
print(json.dumps(failed))
"""


def _not_installed_extras_modules(image: str) -> set[str]:
    """Top-level import names of the extras' distributions that ``image`` does not install."""
    from packaging.requirements import Requirement

    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    own = {_norm(r.name) for r in _requirements_for(image)}
    other_images_extras = set().union(*LOCK.IMAGES.values()) - set(LOCK.IMAGES[image])
    names = {_norm(Requirement(r).name) for extra in other_images_extras for r in optional[extra]}
    return {n.replace("-", "_") for n in names - own}


@pytest.fixture(scope="module")
def steps_image_products(image_venv: Callable[[str], ImageVenv], tmp_path_factory: pytest.TempPathFactory,
                         ) -> tuple[str, Path, subprocess.CompletedProcess[str]]:
    """``raw2ready run`` in the steps-image venv on one small synthetic scene: (tile, output root, result)."""
    from synthesizer import demo_specs, synthesize_archive

    iv = image_venv("steps")
    work = tmp_path_factory.mktemp("image-scene")
    spec = next(s for s in demo_specs() if s.has_l1c and s.cloud_cover < 0.5)  # L1C pair: the cloud model runs
    archive = synthesize_archive(work / "archive", [spec], size=SMALL, seed=0)  # made outside: no synthesizer there
    out = work / "products"
    day = spec.datetime.date().isoformat()
    t0 = time.monotonic()
    res = iv.run("run", "--source", str(archive), "--tiles", spec.tile, "--start", day, "--end", day,
                 "--out", str(out), "--workers", "1")
    print(f"\n[image steps] raw2ready run on one {SMALL}² scene: {time.monotonic() - t0:.1f} s")
    return spec.tile, out, res


@pytest.mark.slow
def test_steps_image_runs_every_entrypoint_and_a_tiny_scene(
        image_venv: Callable[[str], ImageVenv],
        steps_image_products: tuple[str, Path, subprocess.CompletedProcess[str]]) -> None:
    import steps.cli
    from steps.pipeline.registry import STEPS

    iv = image_venv("steps")
    # every command and step entrypoint, as listed by the CLI and the step registry inside the venv
    res = iv.python(_WALK)
    assert res.returncode == 0, res.stderr
    tree = json.loads(res.stdout)
    assert Path(tree["file"]).is_relative_to(iv.venv), f"steps imported from {tree['file']}, not the venv"
    assert list(tree["steps"]) == list(STEPS), "the image's step registry differs from the source tree's"
    paths = [p for p, _code, _out in tree["helps"]]
    top = {p[0] for p in paths if len(p) == 1}
    assert top == set(steps.cli.main.commands), "the image offers other commands than the built-in ones"
    assert not top & {"render", "submit", "synth", "demo"}, "Hera/synthesizer plugins are not in this image"
    assert {tuple(p) for p in paths} >= {("step", n) for n in STEPS} | {("worker",), ("run",)}
    for path, code, out in tree["helps"]:  # every command and group, in the venv's interpreter
        assert code == 0 and out.startswith("Usage: raw2ready"), (path, code, out[-2000:])

    # the console script itself, as Argo runs it (`raw2ready step <name> …`) and the image's default CMD
    def help_of(path: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        return path, iv.run(*path, "--help", timeout=120)

    t0 = time.monotonic()
    scripts = [[], *(["step", n] for n in tree["steps"])]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for path, r in pool.map(help_of, scripts):
            assert r.returncode == 0 and r.stdout.startswith("Usage: raw2ready"), (path, r.stderr[-2000:])
            for opt in tree["steps"].get(path[-1], []) if path else []:  # the options Argo passes exist
                assert f"--{opt}" in r.stdout, (path, opt)
    print(f"\n[image steps] {len(paths)} commands answered --help in the venv; {len(scripts)} console-script "
          f"entrypoints in {time.monotonic() - t0:.1f} s")

    res = iv.python(_IMPORT_ALL)
    assert res.returncode == 0, res.stderr
    failed = json.loads(res.stdout)
    allowed = _not_installed_extras_modules("steps")
    assert all(mod.split(".")[0] in allowed for mod in failed.values()), \
        f"modules that fail to import in the steps image for a reason other than the serve extra: {failed}"

    # a tiny synthetic scene (with its L1C pair, so the compiled cloud model runs), end to end
    tile, out, res = steps_image_products
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert "1 done" in res.stdout and "0 failed" in res.stdout, res.stdout
    assert "compiling the s2cloudless model" not in res.stderr, "the model the build stage compiled was not used"
    (item_path,) = (out / "raw2ready-s2-vegetation").rglob(f"S2*_{tile}_*/S2*.json")
    item = json.loads(item_path.read_text())
    assert {"ndvi", "lai", "cloud_mask"} <= set(item["assets"])
    assert "lleaves" in item["properties"]["processing:software"], "mask ran without the compiled model"
    res = iv.run("validate", str(out / "catalog.json"))
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]


def _wait_http(url: str, proc: subprocess.Popen[str], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError("raw2ready serve exited:\n" + log.read_text()[-4000:])
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()[-4000:]
        time.sleep(0.3)


@pytest.fixture
def serving_default_command(image_venv: Callable[[str], ImageVenv], tmp_path: Path,
                            steps_image_products: tuple[str, Path, subprocess.CompletedProcess[str]],
                            ) -> Iterator[tuple[str, Path]]:
    """The pygeoapi image's default command (ENTRYPOINT + CMD) serving the steps image's catalog."""
    _tile, catalog, made = steps_image_products
    assert made.returncode == 0, made.stderr[-4000:]
    iv = image_venv("pygeoapi")
    entry = next(json.loads(a) for kw, a in iv.final.instructions if kw == "ENTRYPOINT")
    cmd = next(json.loads(a) for kw, a in iv.final.instructions if kw == "CMD")
    assert entry == ["raw2ready"] and cmd[0] == "serve", (entry, cmd)
    port = _free_port()
    mapping = {"/data/products": str(catalog), "0.0.0.0": "127.0.0.1", "5000": str(port)}
    assert set(mapping) <= set(cmd), f"the default command changed: {cmd}"
    args = [mapping.get(a, a) for a in cmd[1:]]
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([str(iv.venv / "bin" / "raw2ready"), "serve", *args], stdout=fh,
                                stderr=subprocess.STDOUT, text=True, env=iv.env, cwd=tmp_path,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/conformance?f=json", proc, log)
        yield base, catalog
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group started for this server only
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.mark.slow
def test_pygeoapi_image_serves_the_catalog_with_its_default_command(
        image_venv: Callable[[str], ImageVenv], serving_default_command: tuple[str, Path]) -> None:
    from edr_helpers import get, get_json, index_items, query_url

    iv = image_venv("pygeoapi")
    res = iv.python(_IMPORT_ALL)
    assert res.returncode == 0 and json.loads(res.stdout) == {}, f"modules failing to import: {res.stdout}"
    for path in ([], ["serve"], ["step", "ndvi"]):
        r = iv.run(*path, "--help", timeout=120)
        assert r.returncode == 0 and r.stdout.startswith("Usage: raw2ready"), (path, r.stderr[-2000:])

    base, catalog = serving_default_command
    collections = {c["id"] for c in get_json(f"{base}/collections?f=json")["collections"]}
    assert {"ndvi", "lai"} <= collections
    (row,) = index_items(catalog)
    w, s, e, n = row["bbox"]
    status, _h, body = get(query_url(base, "/collections/ndvi/position",
                                     coords=f"POINT({(w + e) / 2!r} {(s + n) / 2!r})", datetime="../.."))
    assert status == 200, body[:500]
    doc = json.loads(body)
    assert doc["type"] in ("Coverage", "CoverageCollection") and "ndvi" in json.dumps(doc)
