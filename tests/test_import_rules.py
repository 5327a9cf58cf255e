"""The layering rules of tests/import_rules.py hold for the whole package, and the checker itself
sees every kind of import it claims to (module level, inside a function, an importlib string)."""
from pathlib import Path

import import_rules

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_imports_upward_or_outside_its_allowance():
    problems = import_rules.violations(ROOT)
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_modules():
    assert import_rules.cycles(import_rules.import_graph(ROOT)) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "ros_amf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_sees_function_level_and_string_imports(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "contract/__init__.py": "",
        "contract/input_size.py": "def f():\n    from ros_amf.runtime import engine\n",
        "data/__init__.py": "",
        "data/collate.py": "import importlib\nM = importlib.import_module('ros_amf.training.fit')\n",
        "runtime/__init__.py": "",
        "runtime/bench.py": "import rclpy\nimport argparse\n",
        "ros/__init__.py": "",
        "ros/node.py": "from ros_amf.apps import cli\n",
        "runtime/kinds.py": "NODE = 'ros_amf.ros.node:PerceptionNode'\n",   # a class named by string
    })
    problems = "\n".join(import_rules.violations(root))
    assert "runtime/kinds.py:1 (string) imports ros_amf.ros.node" in problems
    assert "contract/input_size.py:2 (function import) imports ros_amf.runtime" in problems
    assert "data/collate.py:2 (string) imports ros_amf.training.fit" in problems
    assert "runtime/bench.py:1 imports rclpy" in problems
    assert "runtime/bench.py:2 imports argparse" in problems
    assert "ros/node.py:1 imports ros_amf.apps: nothing may import apps/" in problems


def test_checker_finds_a_cycle(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "runtime/__init__.py": "",
        "runtime/a.py": "from ros_amf.runtime import b\n",
        "runtime/b.py": "def f():\n    import ros_amf.runtime.a\n",
    })
    assert import_rules.cycles(import_rules.import_graph(root)) == [
        ["ros_amf.runtime.a", "ros_amf.runtime.b", "ros_amf.runtime.a"]]
