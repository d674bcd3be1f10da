"""The example configuration and the README reference are generated, never stale."""

from __future__ import annotations

from pathlib import Path

from agent.config.reference import render_example, render_reference, splice_reference
from agent.config.schema import Config


def test_example_file_is_current(repo_root: Path) -> None:
    on_disk = (repo_root / "config" / "gateway.example.toml").read_text(encoding="utf-8")
    assert on_disk == render_example(), "run: python -m agent.config.reference"


def test_readme_reference_is_current(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    assert splice_reference(readme) == readme, "run: python -m agent.config.reference"


def test_every_key_is_documented() -> None:
    reference = render_reference()
    for section in Config.model_fields.values():
        model = section.annotation
        model = getattr(model, "__args__", (model,))[0]
        for key, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{key} has no description"
            assert f"| `{key}` |" in reference
