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
