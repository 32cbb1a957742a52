"""Optional dependencies of the deployment tools (ONNX export and runtime, FAISS gallery index).

They are declared in the ``deploy`` extra (``pip install -e ".[deploy]"``; ``.[dev]`` includes it);
:func:`require` imports one and, when it is missing, raises an ImportError that names the pip command.
"""
import importlib
from types import ModuleType

__all__ = ["OPTIONAL_PACKAGES", "require"]

OPTIONAL_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime", "faiss": "faiss-cpu"}  # module -> pip name


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional module or fail with the command that installs it.

    Args:
        module (str): module name, one of ``OPTIONAL_PACKAGES``.
        purpose (str): what needs it, for the message (e.g. ``'jbim-reid export'``).

    Returns:
        module: the imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pip_name = OPTIONAL_PACKAGES.get(module, module)
        raise ImportError(f"{purpose} needs the optional package '{pip_name}', which is not installed: "
                          f"pip install '{pip_name}' (or pip install -e \".[deploy]\" in the jbim-reid "
                          f"source tree)") from err
