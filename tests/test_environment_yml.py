"""environment.yml (conda, GPU instances) and pyproject.toml (pip) must name the same packages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="Python 3.10 without tomli cannot read pyproject.toml")
import yaml  # PyYAML comes with jupyterlab (jupyterlab -> jupyter-server -> jupyter-events -> pyyaml)
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# conda name -> pip name, where they differ
CONDA_TO_PIP = {"pytorch": "torch", "pytorch-gpu": "torch", "pytorch-cuda": "torch"}
# conda packages with no pip counterpart: the interpreter and the CUDA pin
CONDA_ONLY = {"python", "pip", "cuda-version"}


def _normalize(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name).lower()
    return re.sub(r"^kvikio-cu\d+$", "kvikio", name)  # the pip wheels carry the CUDA major in the name


def _conda_spec(spec: str) -> tuple[str, str | None]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(?:>=\s*([\w.]+))?.*", spec)
    assert m, f"environment.yml: cannot read {spec!r}"
    return m.group(1), m.group(2)


def _environment() -> tuple[dict[str, str | None], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: dict[str, str | None] = {}
    pip: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # pip-only packages count as named by environment.yml too
            pip += dep["pip"]
            for spec in dep["pip"]:
                if not spec.startswith("-"):
                    name, low = _conda_spec(spec.split("#")[0])
                    conda[_normalize(name)] = low
            continue
        name, low = _conda_spec(dep)
        if name in CONDA_ONLY:
            continue
        conda[_normalize(CONDA_TO_PIP.get(name, name))] = low
    return conda, pip


def _pyproject() -> dict[str, str | None]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    out: dict[str, str | None] = {}
    for line in [*project["dependencies"], *extras["test"], *extras["gds-cu12"]]:
        req = Requirement(line)
        low = next((s.version for s in req.specifier if s.operator == ">="), None)
        out.setdefault(_normalize(req.name), low)
    return out


def test_environment_yml_names_the_same_packages_as_pyproject():
    conda, _ = _environment()
    pip = _pyproject()
    assert set(conda) == set(pip), (
        f"only in environment.yml: {sorted(set(conda) - set(pip))}; "
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}")


def test_lower_bounds_agree():
    conda, _ = _environment()
    pip = _pyproject()
    differ = {n: (conda[n], pip[n]) for n in set(conda) & set(pip) if conda[n] and pip[n] and conda[n] != pip[n]}
    assert not differ, f"minimum versions differ (environment.yml, pyproject.toml): {differ}"


def test_environment_installs_gdslab_editable_with_cuda_torch():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    _, pip = _environment()
    assert "-e ." in pip
    names = [_conda_spec(d)[0] for d in env["dependencies"] if isinstance(d, str)]
    assert "python" in names and "cuda-version" in names
    assert {"pytorch-gpu", "pytorch-cuda"} & set(names) or any(
        re.search(r"pytorch\b.*cuda", d) for d in env["dependencies"] if isinstance(d, str)), \
        "environment.yml must ask for a CUDA build of PyTorch"


@pytest.mark.parametrize("name, expected", [("kvikio-cu12", "kvikio"), ("kvikio_cu13", "kvikio"),
                                            ("nvidia_ml.py", "nvidia-ml-py"), ("PyYAML", "pyyaml")])
def test_names_are_normalized(name, expected):
    assert _normalize(name) == expected
