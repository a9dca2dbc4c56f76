"""The package surface: labkit's __all__ lists every module, and each module's __all__ is honest."""

import importlib
import pkgutil

import labkit


def test_all_lists_every_module_sorted():
    """labkit.__all__ is sorted and names exactly the modules in the package."""
    modules = sorted(m.name for m in pkgutil.iter_modules(labkit.__path__) if not m.name.startswith("_"))
    assert sorted(labkit.__all__) == labkit.__all__
    assert modules == labkit.__all__


def test_each_module_all_is_sorted_and_exists():
    """Every module declares a sorted __all__ whose names all exist."""
    for name in labkit.__all__:
        module = importlib.import_module(f"labkit.{name}")
        assert hasattr(module, "__all__"), f"labkit.{name} has no __all__"
        assert sorted(module.__all__) == list(module.__all__), f"labkit.{name}.__all__ is not sorted"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert missing == [], f"labkit.{name}.__all__ names missing objects {missing}"


def _labkit_imports():
    """(module -> labkit modules it imports, anywhere in its body), and every use of another module's private name."""
    import ast
    from pathlib import Path

    root = Path(labkit.__file__).parent
    files = {p.stem: p for p in root.glob("*.py") if p.stem != "__init__"}
    files.update({p.parent.name: p for p in root.glob("*/__init__.py")})
    graph, private = {m: set() for m in files}, []
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "labkit":
                for a in node.names:
                    graph[name].add(a.name)
                    aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit."):
                target = node.module.split(".")[1]
                graph[name].add(target)
                private += [(name, f"{target}.{a.name}") for a in node.names if a.name.startswith("_")]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                private.append((name, f"{aliases[node.value.id]}.{node.attr}"))
    return {m: deps & set(files) - {m} for m, deps in graph.items()}, private


def test_no_import_cycle_between_labkit_modules():
    """No labkit module imports, even lazily inside a function, one that imports it back."""
    graph, _ = _labkit_imports()

    def reaches(start, goal, seen):
        return any(d == goal or (d not in seen and reaches(d, goal, seen | {d})) for d in graph[start])

    assert [] == sorted(m for m in graph if reaches(m, m, {m}))


def test_no_module_uses_another_modules_private_names():
    """labkit modules use each other's public API only."""
    assert [] == _labkit_imports()[1]
