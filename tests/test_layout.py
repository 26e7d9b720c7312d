"""The layout is the architecture: detectors/ is a pure library, deployables stand apart, no import cycles.

The import contracts themselves are in pyproject.toml ([tool.importlinter]); `make test` runs
`lint-imports` on them. These tests check what a contract file cannot say.
"""

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"kafka", "faust", "aiokafka", "mode", "streams"}

# Where a newcomer looks for each part, from folder names alone.
DEPLOYABLES = {
    "streams/events": "the event model and the topics",
    "streams/tap": "where events enter (the library a service embeds)",
    "streams/worker": "the stream processor that runs the detectors",
    "streams/policy": "the rules over the metrics",
    "streams/actions": "where actions leave (policy agent, kill switch, notifications)",
    "streams/gateway": "the OpenAI-compatible proxy",
    "streams/otlp": "OpenTelemetry in: the OTLP trace decoder and receiver",
    "streams/local": "local-only tools",
    "streams/cli": "the command line, one module per command group",
}


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


def test_each_deployable_is_a_package_of_its_own():
    for folder in DEPLOYABLES:
        assert (ROOT / folder / "__init__.py").is_file(), folder
    # Exactly one module builds Kafka clients' configuration and knows TLS/SASL.
    knows_security = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "streams").rglob("*.py")
        if "sasl_plain_password" in p.read_text() or "SASLCredentials" in p.read_text()
    ]
    assert knows_security == ["streams/kafka_clients.py"]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every module that can reach itself through imports (outside TYPE_CHECKING blocks)."""
    found = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            # A package importing its own submodules (re-exports in __init__) is not a cycle.
            if imported.startswith(module + "."):
                continue
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                found.append([module, *chain])
    return found


def test_no_import_cycles():
    graph = grimp.build_graph("streams", "detectors", "dashboards", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_the_import_contracts_hold():
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.argv=['lint-imports']; lint_imports_command()",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout[-3000:]


def test_the_cycle_check_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("pkg", "pkg.a", "pkg.b"):
        graph.add_module(m)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    assert _cycles(graph) == []
    graph.add_import(importer="pkg.b", imported="pkg.a")
    assert ["pkg.a", "pkg.b", "pkg.a"] in _cycles(graph)
