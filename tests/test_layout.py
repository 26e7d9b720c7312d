"""The layout is the architecture: detectors/ is a pure library."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"kafka", "faust", "aiokafka", "mode", "streams"}


def test_detectors_never_import_kafka_faust_or_streams():
    offenders = []
    for path in (ROOT / "detectors").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == []


def test_the_top_level_the_user_asked_for_exists():
    for name in ("pyproject.toml", "README.md", "docker-compose.yml", "streams", "detectors", "dashboards", "tests", "bench", ".ci/run"):
        assert (ROOT / name).exists(), name
