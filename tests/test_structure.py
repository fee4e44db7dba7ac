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


def _core_imports(package: str) -> dict[str, list[str]]:
    """texium.core modules imported by each module of texium/core/<package>."""
    found = {}
    for path in (CORE / package).rglob("*.py"):
        modules = sorted(m for m in imported_modules(path) if m.startswith("texium.core"))
        found[str(path.relative_to(CORE))] = modules
    return found


def _offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    return {
        module: [m for m in imports if m.startswith(forbidden)]
        for module, imports in _core_imports(package).items()
        if any(m.startswith(forbidden) for m in imports)
    }


def test_the_datastore_imports_no_service_of_the_core():
    """core/datastore is the bottom: it knows documents, not jobs, runs or users."""
    allowed = ("texium.core.datastore", "texium.core.errors", "texium.core.jsontext", "texium.core.timeutil")
    allowed += ("texium.core.caches", "texium.core.security")  # owner-only files for the database
    offenders = {
        module: [m for m in imports if not m.startswith(allowed)]
        for module, imports in _core_imports("datastore").items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_firing_core_imports_neither_its_consumers_nor_the_services_above_it():
    """events -> scheduling -> datastore: alerts, records and views may use the firing core,
    never the other way round (the core calls alerts through a hook it is given)."""
    forbidden = ("texium.core.events", "texium.core.records", "texium.core.views", "texium.core.scheduler_manager")
    assert _offenders("scheduling", forbidden) == {}


def test_consumers_of_run_ended_and_records_do_not_reach_into_the_server_or_each_other_s_views():
    assert _offenders("events", ("texium.core.views", "texium.core.scheduler_manager")) == {}
    assert _offenders("records", ("texium.core.events", "texium.core.views", "texium.core.scheduler_manager")) == {}
