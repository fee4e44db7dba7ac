"""The import direction the README promises: jobs -> core, server -> core; the core imports
neither, and never reads settings."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "texium" / "core"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_core_imports_neither_the_jobs_nor_the_server_nor_settings():
    offenders = {
        str(path.relative_to(CORE)): sorted(
            m
            for m in imported_modules(path)
            if m.startswith(("texium.jobs", "texium.server", "texium.config", "texium.default_settings", "settings"))
        )
        for path in CORE.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_job_contract_is_the_core_s_and_still_importable_from_texium_jobs_base():
    from texium.core import job
    from texium.jobs import base

    assert (base.JobBase, base.JobContext, base.JobError) == (job.JobBase, job.JobContext, job.JobError)
