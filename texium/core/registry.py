"""Which job classes can be scheduled: the built-ins in texium.jobs plus configured packages.

Built-ins are named as the API document names them (`jobs.echo.EchoJob`); a class from a
user's package by its full dotted path. `texium.jobs.echo.EchoJob` is accepted too.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from dataclasses import dataclass

from texium.core.errors import ValidationError
from texium.core.job import JobBase
from texium.core.security.secret_args import parse_declaration, parse_destination

log = logging.getLogger("texium.registry")
BUILTIN_PACKAGE = "texium.jobs"
BUILTIN_PREFIX = "jobs."
# The order of the API document's list.
BUILTIN_ORDER = (
    "echo",
    "server",
    "backup",
    "email",
    "cleanup",
    "metrics",
    "report",
    "webhook",
    "maintenance",
    "custom",
)


@dataclass(frozen=True)
class JobClass:
    class_string: str
    cls: type[JobBase]
    # The class's `secret_arguments` read as patterns (texium.core.security.secret_args).
    secrets: tuple[tuple[str, ...], ...] = ()
    # Its `secret_destination`: the argument holding the URL the secrets are sent to, or None.
    destination: tuple[str, ...] | None = None

    def describe(self) -> dict:
        meta = self.cls.meta_info()
        return {
            "class_string": self.class_string,
            "name": self.cls.__name__,
            "description": meta.get("description", ""),
            "meta_info": meta,
            "admin_only": bool(getattr(self.cls, "admin_only", False)),
        }


def _modules(package_name: str) -> list:
    package = importlib.import_module(package_name)
    if not hasattr(package, "__path__"):
        return [package]
    names = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_") and m.name != "base"]
    if package_name == BUILTIN_PACKAGE:
        names.sort(key=lambda n: (BUILTIN_ORDER.index(n) if n in BUILTIN_ORDER else len(BUILTIN_ORDER), n))
    return [importlib.import_module(f"{package_name}.{name}") for name in names]


class JobRegistry:
    def __init__(self, extra_packages: list[str] | tuple[str, ...] = ()):
        """Raises ValueError when a configured package cannot be imported."""
        self._classes: dict[str, JobClass] = {}
        for package in (BUILTIN_PACKAGE, *extra_packages):
            try:
                modules = _modules(package)
            except Exception as exc:
                raise ValueError(f"Cannot import job package {package!r}: {exc}") from None
            for module in modules:
                for _, cls in inspect.getmembers(module, inspect.isclass):
                    if issubclass(cls, JobBase) and cls is not JobBase and cls.__module__ == module.__name__:
                        self._add(cls)

    def _add(self, cls: type[JobBase]) -> None:
        path = f"{cls.__module__}.{cls.__name__}"
        name = BUILTIN_PREFIX + path[len(BUILTIN_PACKAGE) + 1 :] if path.startswith(BUILTIN_PACKAGE + ".") else path
        # A declaration that cannot be read stops the server: guessing would store secrets in clear.
        secrets = parse_declaration(getattr(cls, "secret_arguments", ()), path)
        destination = parse_destination(getattr(cls, "secret_destination", None), path)
        self._classes[name] = JobClass(name, cls, secrets, destination)

    def available(self) -> list[dict]:
        return [job_class.describe() for job_class in self._classes.values()]

    def canonical(self, class_string: str) -> str:
        """The listed name for `class_string`; ValidationError when it is not schedulable."""
        name = class_string.strip() if isinstance(class_string, str) else class_string
        if isinstance(name, str) and name.startswith(BUILTIN_PACKAGE + "."):
            name = BUILTIN_PREFIX + name[len(BUILTIN_PACKAGE) + 1 :]
        if name not in self._classes:
            raise ValidationError(f"Invalid field job_class_string: {class_string!r} is not an available job class")
        return name

    def admin_only(self, class_string: str) -> bool:
        """Classes that run programs or touch every user's data declare `admin_only = True`."""
        try:
            return bool(getattr(self.resolve(class_string), "admin_only", False))
        except Exception:
            return False  # not a job class: the create or update refuses it with a 400

    def resolve(self, class_string: str) -> type[JobBase]:
        return self._classes[self.canonical(class_string)].cls

    def _known(self, class_string: str) -> JobClass | None:
        job_class = self._classes.get(class_string)
        if job_class is None:
            try:
                job_class = self._classes[self.canonical(class_string)]
            except ValidationError:
                return None
        return job_class

    def secret_arguments(self, class_string: str) -> tuple[tuple[str, ...], ...]:
        """The secret arguments the class declares (`secret_arguments`), as patterns; none for a
        class that is not (or no longer) available."""
        job_class = self._known(class_string)
        return job_class.secrets if job_class else ()

    def secret_destination(self, class_string: str) -> tuple[str, ...] | None:
        """The argument holding the URL the class sends its secrets to (`secret_destination`)."""
        job_class = self._known(class_string)
        return job_class.destination if job_class else None
