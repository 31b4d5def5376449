"""Write (or check) the hash-pinned lock file of every image: ``images/<image>/requirements.lock``.

Usage (from the repository root; ``make lock`` runs the first form)::

    python images/lock.py            # resolve with uv and rewrite every lock
    python images/lock.py --check    # exit 1, naming the stale locks, when pyproject.toml changed since

A lock holds the image's third-party distributions only — the project's ``dependencies``, the optional
extras the image needs (:data:`IMAGES`) and the build backend (``[build-system] requires``, so that the
project itself installs with ``--no-build-isolation`` and nothing unhashed is fetched) — each pinned ``==``
with the sha256 of every file the index publishes for that version (``uv pip compile --generate-hashes``).
The project is installed from the source tree afterwards, with ``--no-deps``.

The first lines of a lock record a sha256 of its inputs (the dependency lists above, the extras, the
target Python and platform); ``--check`` recomputes it from ``pyproject.toml`` without resolving anything
(offline, instant), so a dependency edit without ``make lock`` fails the tests with a clear message.
Resolution targets the images' interpreter and platform (:data:`PYTHON_VERSION`, :data:`PYTHON_PLATFORM`:
CPython 3.12 on Debian bookworm, glibc 2.36, x86-64), not the machine that runs this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

log = logging.getLogger("images.lock")

ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = ROOT / "images"
PYPROJECT = ROOT / "pyproject.toml"
LOCK_NAME = "requirements.lock"
DOCKERFILE = IMAGES_DIR / "Dockerfile"
"""The one Dockerfile of every image; ``images/<image>/`` holds that image's lock."""

IMAGES: dict[str, tuple[str, ...]] = {
    "steps": (),  # every step and the queue worker; no Hera, no server
    "pygeoapi": ("serve",),  # `raw2ready serve`: pygeoapi, gunicorn, rio-tiler, orjson
}
"""Image folder under ``images/`` → the optional-dependency extras of pyproject.toml it installs."""

PYTHON_VERSION = "3.12"
PYTHON_PLATFORM = "x86_64-manylinux_2_36"  # python:3.12.x-slim-bookworm on amd64 (glibc 2.36)
FORMAT = 1  # bump when the lock layout or the hashed inputs change meaning

_INPUTS_RE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)


def lock_path(image: str) -> Path:
    """Path of an image's lock file."""
    return IMAGES_DIR / image / LOCK_NAME


def lock_inputs(image: str, pyproject: Path = PYPROJECT) -> dict[str, Any]:
    """Everything a lock is resolved from (comments and the other extras of pyproject.toml are not part of it)."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    optional = project.get("optional-dependencies", {})
    extras = IMAGES[image]
    missing = [e for e in extras if e not in optional]
    if missing:
        raise SystemExit(f"images/lock.py: image {image!r} needs extras {missing} that pyproject.toml does not define")
    return {
        "format": FORMAT,
        "image": image,
        "requires-python": project.get("requires-python", ""),
        "dependencies": list(project.get("dependencies", [])),
        "extras": {e: list(optional[e]) for e in extras},
        "build-system": list(data.get("build-system", {}).get("requires", [])),
        "python-version": PYTHON_VERSION,
        "python-platform": PYTHON_PLATFORM,
    }


def inputs_sha256(image: str, pyproject: Path = PYPROJECT) -> str:
    """sha256 (hex) of the canonical JSON of :func:`lock_inputs`."""
    blob = json.dumps(lock_inputs(image, pyproject), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def recorded_sha256(lock: Path) -> str | None:
    """The inputs hash recorded in a lock's header, or None when the file or the line is missing."""
    if not lock.is_file():
        return None
    m = _INPUTS_RE.search(lock.read_text())
    return m.group(1) if m else None


def dockerfile_images(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The images ``images/Dockerfile`` builds (``--build-arg IMAGE=<name>``): its stages with an ``ENTRYPOINT``."""
    names = []
    for stage in re.split(r"(?im)^FROM[ \t]+", dockerfile.read_text())[1:]:
        head, _, body = stage.partition("\n")
        parts = head.split()
        if len(parts) == 3 and parts[1].upper() == "AS" and re.search(r"(?im)^ENTRYPOINT\s", body):
            names.append(parts[2])
    return sorted(names)


def _uv() -> list[str]:
    """Command prefix that runs uv (the dev extra installs it next to this interpreter)."""
    exe = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if exe is None:
        try:
            from uv import find_uv_bin  # the PyPI package `uv` ships the binary

            exe = find_uv_bin()
        except ImportError:
            raise SystemExit("images/lock.py needs uv: pip install 'uv>=0.5' (part of the dev extra)") from None
    return [exe]


def _header(image: str, digest: str) -> str:
    extras = ", ".join(IMAGES[image]) or "(none)"
    return (
        f"# Lock of the {image} image (images/Dockerfile, IMAGE={image}). Generated by `make lock` (python "
        f"images/lock.py): do not edit.\n"
        f"# Third-party distributions only (dependencies + extras + build backend); the project itself is\n"
        f"# installed from the source tree with --no-deps --no-build-isolation.\n"
        f"# extras: {extras}\n"
        f"# target: python {PYTHON_VERSION}, {PYTHON_PLATFORM}\n"
        f"# inputs-sha256: {digest}\n"
    )


def write_lock(image: str) -> Path:
    """Resolve ``image``'s requirements with uv (hashes of every published file) and write its lock."""
    inputs = lock_inputs(image)
    out = lock_path(image)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / LOCK_NAME
        cmd = [*_uv(), "pip", "compile", "--quiet", "--no-config", "--no-header", "--generate-hashes",
               "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM,
               *[a for e in IMAGES[image] for a in ("--extra", e)],
               "pyproject.toml", "-",  # "-": the build-system requirements, read from stdin
               "-o", str(tmp_out)]
        # cwd = repository root so that the "# via" annotations name pyproject.toml, not an absolute path
        subprocess.run(cmd, cwd=ROOT, input="\n".join(inputs["build-system"]) + "\n", text=True, check=True)
        body = tmp_out.read_text()
    out.write_text(_header(image, inputs_sha256(image)) + body)
    log.info("wrote %s (%d pinned distributions)", out.relative_to(ROOT), body.count("=="))
    return out


def stale_locks() -> list[str]:
    """One message per image whose lock is missing, unknown to :data:`IMAGES`, or older than pyproject.toml."""
    problems: list[str] = []
    built = dockerfile_images()
    problems += [f"images/lock.py: IMAGES lists {image!r} but images/Dockerfile has no stage {image!r} with an "
                 "ENTRYPOINT" for image in sorted(set(IMAGES) - set(built))]
    for image in built:
        if image not in IMAGES:
            problems.append(f"images/Dockerfile builds image {image!r} but IMAGES (images/lock.py) has no entry for it")
            continue
        lock = lock_path(image)
        recorded = recorded_sha256(lock)
        if recorded is None:
            problems.append(f"{lock.relative_to(ROOT)} is missing or has no '# inputs-sha256:' line")
        elif recorded != inputs_sha256(image):
            problems.append(f"{lock.relative_to(ROOT)} is stale: pyproject.toml's dependencies, the "
                            f"extras {list(IMAGES[image])} or the build-system requires changed since it was made")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line: write every lock, or ``--check`` them (exit 1 with one line per stale lock)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that every lock matches pyproject.toml")
    parser.add_argument("images", nargs="*", help="images to lock (default: every image images/Dockerfile builds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        problems = stale_locks()
        for p in problems:
            log.error("%s", p)
        if problems:
            log.error("regenerate with: make lock")
            return 1
        log.info("every image lock matches pyproject.toml")
        return 0
    for image in args.images or dockerfile_images():
        if image not in IMAGES:
            log.error("unknown image %r: add it to IMAGES in images/lock.py", image)
            return 1
        write_lock(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
