"""requirements.txt and environment.yml must list the same exact pins."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines():
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    return [l for l in lines if l]


def environment_pip_lines():
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    return [m.group(1).strip() for m in re.finditer(r"^\s+-\s+(.+)$", pip_block, flags=re.M)]


def test_every_requirement_is_pinned_exactly():
    for line in requirement_lines():
        assert line == "-e ." or re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+]*", line), line


def test_environment_yml_agrees_with_requirements():
    assert environment_pip_lines() == requirement_lines()
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    for line in requirement_lines():
        if line == "-e .":
            continue
        name, pinned = line.split("==")
        assert version(name).split("+")[0] == pinned, f"{name}: installed {version(name)}, pinned {pinned}"
