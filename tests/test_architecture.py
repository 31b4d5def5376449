"""docs/ARCHITECTURE.md matches the code: its package table is the import rule, and what it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
OURS = ("steps", "workflows", "synthesizer")


def unit_of(module: str) -> str:
    """The architecture unit of a dotted module: ``steps.<sub>`` for steps, else the top package."""
    parts = module.split(".")
    if parts[0] != "steps":
        return parts[0]
    return "steps" if len(parts) == 1 else f"steps.{parts[1]}"


def module_name(path: Path) -> str:
    """Dotted module name of a source file below the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in OURS:
                found.add(name)
    return found


def source_files() -> list[Path]:
    """The package sources the rule applies to."""
    return sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("*.py"))


def steps_units() -> set[str]:
    """Every unit of the steps package: its sub-packages and top-level modules."""
    units = {"steps"}
    for p in (ROOT / "steps").iterdir():
        if p.is_dir() and (p / "__init__.py").exists():
            units.add(f"steps.{p.name}")
        elif p.suffix == ".py" and p.name != "__init__.py":
            units.add(f"steps.{p.stem}")
    return units


def allowed_table() -> dict[str, set[str]]:
    """``unit -> units it may import`` from the doc's package table."""
    rules: dict[str, set[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"`[a-z0-9_.]+`", cells[0]):
            continue
        unit = cells[0].strip("`")
        may = cells[2]
        if may == "nothing":
            rules[unit] = set()
        elif may in ("every `steps` package", "any `steps` package"):
            rules[unit] = steps_units()
        else:
            rules[unit] = set(re.findall(r"`([a-z0-9_.]+)`", may))
    return rules


def test_the_doc_names_every_package_of_steps_and_nothing_that_is_not_one():
    rules = allowed_table()
    documented = {u for u in rules if u.startswith("steps")}
    assert steps_units() - {"steps"} == documented, "docs/ARCHITECTURE.md package table out of date"
    assert {"workflows", "synthesizer"} <= set(rules)


def test_every_import_in_the_code_is_allowed_by_the_doc():
    rules = allowed_table()
    breaches = []
    for path in source_files():
        src = unit_of(module_name(path))
        if src == "steps":
            allowed = {"steps"}
        elif src not in rules:
            breaches.append(f"{path.relative_to(ROOT)}: package {src} is not in the doc's table")
            continue
        else:
            allowed = rules[src] | {src}
        for name in sorted(imports_of(path)):
            dst = unit_of(name)
            # `from steps import x` names a sub-package or module: its unit is the one that counts
            if dst == "steps" and name.count(".") == 1 and f"steps.{name.split('.')[1]}" in steps_units():
                dst = f"steps.{name.split('.')[1]}"
            if dst not in allowed:
                breaches.append(f"{path.relative_to(ROOT)}: imports {name} ({src} may not import {dst})")
    assert not breaches, "\n".join(breaches)


def test_steps_never_imports_workflows_or_the_synthesizer():
    for path in (ROOT / "steps").rglob("*.py"):
        bad = [n for n in imports_of(path) if n.split(".")[0] in ("workflows", "synthesizer")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("kind", ["path", "module"])
def test_every_file_and_module_the_doc_names_exists(kind):
    text = DOC.read_text(encoding="utf-8")
    missing = []
    if kind == "path":
        for ref in set(re.findall(r"`((?:steps|workflows|synthesizer|tests|manifests|argocd)/[^`\s]*)`", text)):
            base = ref.split("{")[0].rstrip("/")
            if not (ROOT / base).exists():
                missing.append(ref)
        # a bullet about a folder ("- **Steps** (`steps/pipeline/`): …") names its files bare: `runner.py`
        for bullet in re.split(r"\n- ", text):
            head = re.match(r"\*\*[^*]+\*\* \(`((?:steps|workflows)/[a-z0-9_]+)/`\)", bullet)
            if not head:
                continue
            for name in re.findall(r"(?<![/\w])`([a-z0-9_]+\.py)`", bullet):
                if not (ROOT / head.group(1) / name).exists():
                    missing.append(f"{head.group(1)}/{name}")
    else:
        for ref in set(re.findall(r"`(steps(?:\.[a-z0-9_]+)+)`", text)):
            path = ROOT / Path(*ref.split("."))
            if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()):
                # a name inside a module (steps.pipeline.registry.SCENE_DAG) — its module must exist
                parent = ROOT / Path(*ref.split(".")[:-1])
                if not parent.with_suffix(".py").exists():
                    missing.append(ref)
    assert not missing, f"docs/ARCHITECTURE.md names what does not exist: {sorted(missing)}"


def test_the_import_rule_catches_a_forbidden_import(tmp_path, monkeypatch):
    """The check can fail: a science module importing storage is reported."""
    science = ROOT / "steps" / "science" / "ndvi.py"
    imports = imports_of(science) | {"steps.storage"}
    rules = allowed_table()
    bad = [n for n in imports if unit_of(n) not in rules["steps.science"] | {"steps.science"}]
    assert bad == ["steps.storage"]
