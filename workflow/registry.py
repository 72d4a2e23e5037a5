"""The loaded definitions: every key and version, and the machine of each (built once)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from workflow.definition import Definition, MigrationPlan
from workflow.errors import DefinitionError, UnknownDefinition
from workflow.loader import check_migrations, load_file
from workflow.machine import CaseMachine


class Registry:
    def __init__(self, definitions: list[Definition]) -> None:
        self._defs: dict[tuple[str, int], Definition] = {}
        self._machines: dict[tuple[str, int], CaseMachine] = {}
        self._params: dict[tuple[str, int], dict[str, Any]] = {}
        for d in definitions:
            if (d.key, d.version) in self._defs:
                raise ValueError(f"definition {d.ref} loaded twice")
            self._defs[(d.key, d.version)] = d
            self._machines[(d.key, d.version)] = CaseMachine(d)
            self._params[(d.key, d.version)] = {n: p.value for n, p in d.parameters.items()}
        problems = check_migrations(definitions)
        if problems:
            raise DefinitionError(
                "invalid migration plans:\n" + "\n".join(map(str, problems)),
                errors=[str(p) for p in problems],
            )

    @classmethod
    def from_directory(cls, path: str | Path) -> Registry:
        """Load every ``*.yaml`` file of ``path``; DefinitionError lists every problem."""
        return cls([load_file(p) for p in sorted(Path(path).glob("*.yaml"))])

    def get(self, key: str, version: int) -> Definition:
        try:
            return self._defs[(key, int(version))]
        except (KeyError, ValueError):
            raise UnknownDefinition(
                f"no definition {key}@{version}", key=key, version=version
            ) from None

    def machine(self, definition: Definition) -> CaseMachine:
        return self._machines[(definition.key, definition.version)]

    def parameters(self, definition: Definition) -> dict[str, Any]:
        """The parameter values of a version, by name (built once; do not mutate)."""
        return self._params[(definition.key, definition.version)]

    def versions(self, key: str) -> list[Definition]:
        return sorted((d for (k, _), d in self._defs.items() if k == key), key=lambda d: d.version)

    def keys(self) -> list[str]:
        return sorted({k for k, _ in self._defs})

    def all(self) -> list[Definition]:
        return [self._defs[k] for k in sorted(self._defs)]

    def in_force(self, key: str, day: date) -> Definition:
        """The newest version of ``key`` in force on ``day``."""
        candidates = [d for d in self.versions(key) if d.in_force_on(day)]
        if not candidates:
            raise UnknownDefinition(
                f"no version of {key!r} is in force on {day.isoformat()}", key=key
            )
        return candidates[-1]

    def migration_plan(self, key: str, from_version: int, to_version: int) -> MigrationPlan:
        """The plan, declared in version ``to_version``, for cases of ``from_version``."""
        target = self.get(key, to_version)
        self.get(key, from_version)
        plan = target.migrations.get(f"{key}@{from_version}")
        if plan is None:
            raise UnknownDefinition(
                f"{target.ref} declares no migration from {key}@{from_version}",
                key=key,
                version=to_version,
            )
        return plan
