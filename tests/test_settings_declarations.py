"""Each setting is declared once (app/settings.py's ``env(...)``): its variable, default,
reader and description, and nothing else states them again."""

from __future__ import annotations

import dataclasses

from app.settings import Settings, variables


def test_every_setting_is_declared_with_one_variable_of_its_own() -> None:
    declared = [variable.name for variable, _ in variables()]

    assert len(declared) == len(dataclasses.fields(Settings))
    assert len(set(declared)) == len(declared)
    assert all(variable.doc.endswith(".") for variable, _ in variables())


def test_each_variable_unset_gives_the_declared_default() -> None:
    unset = {variable.name: "" for variable, _ in variables()} | {"SUPABASE_JWT_SECRET": ""}

    assert Settings.from_env(unset) == Settings()
    assert [default for _, default in variables()] == [
        getattr(Settings(), field.name) for field in dataclasses.fields(Settings)
    ]
