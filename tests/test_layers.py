"""The house plan, enforced: which module may import which (read from the source, every import
statement, including those inside functions).

    core   names, metadata, catalog, renderers, multipart, XML-RPC, settings, errors:
           no bottle, waitress, passlib, sockets, processes or databases
      ->   disk and process: records, index cache, inotify, scan, indexer, publish, upload, auth,
           observe, manage, hosted, update (no bottle, no waitress)
      ->   HTTP: answers, site, api, pages, app (only these import bottle), server (the only
           one that imports waitress)
      ->   the command line: cli, arguments (the parser, pypiserver's forms), options (each
           option declared once), validate (settings from the parsed options) (anything)

A lower layer never imports a higher one. README.md ("How the code is laid out") explains it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pkgserver"

LAYERS: dict[str, int] = {}
for _layer, _names in enumerate(
    (
        "__init__ distfile archives metadata catalog render multipart xmlrpc config errors web"
        " rights upstream",
        "fsutil records cache inotify scan hasher indexer publish storage s3 s3feed upload auth"
        " tokens observe manage hosted update oidc attest proxy",
        "answers site api pages app server",
        "cli arguments options validate service __main__ mirror",
    )
):
    LAYERS.update(dict.fromkeys(_names.split(), _layer))
NAMES = ("core", "disk and process", "HTTP", "cli")

# Third-party and standard modules a layer may not use, and who alone may use bottle/waitress.
FORBIDDEN = {
    0: {"bottle", "waitress", "passlib", "socket", "sqlite3", "subprocess", "multiprocessing"},
    1: {"bottle", "waitress"},
    2: set(),
    3: set(),
}
ONLY = {
    "bottle": {"answers", "site", "api", "pages", "app"},
    "waitress": {"server"},
}
# Known exceptions, each with its reason. A new one needs a line here (and a reason).
ALLOWED: set[tuple[str, str]] = set()


def imports_of(source: str) -> set[str]:
    """Top-level names imported: "bottle", or ".fsutil" for a module of the package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.module:
                    found.add("." + node.module.split(".")[0])
                else:
                    found.update("." + alias.name for alias in node.names)
            elif node.module:
                base = node.module.split(".")[0]
                if base == "pkgserver":
                    found.update("." + alias.name for alias in node.names)
                else:
                    found.add(base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.add(
                    "." + parts[1] if parts[0] == "pkgserver" and len(parts) > 1 else parts[0]
                )
    return found


def violations(module: str, source: str) -> list[str]:
    layer = LAYERS[module]
    out = []
    for name in sorted(imports_of(source)):
        if name.startswith("."):
            target = name[1:]
            if target == "__version__":
                continue  # the package's version string (pkgserver/__init__.py)
            if target not in LAYERS:
                out.append(f"{module} imports .{target}, which no layer names (add it to LAYERS)")
            elif LAYERS[target] > layer and (module, target) not in ALLOWED:
                out.append(f"{module} ({NAMES[layer]}) imports {target} ({NAMES[LAYERS[target]]})")
        else:
            if name in FORBIDDEN[layer]:
                out.append(f"{module} ({NAMES[layer]}) imports {name}")
            if name in ONLY and module not in ONLY[name]:
                out.append(f"{module} imports {name}: only {sorted(ONLY[name])} may")
    return out


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYERS), "add new modules to LAYERS (and README's map)"


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_a_module_imports_nothing_above_its_layer(module: str) -> None:
    assert violations(module, (PACKAGE / f"{module}.py").read_text()) == []


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("catalog", "import bottle"),
        ("render", "from . import indexer"),
        ("distfile", "from pkgserver.upload import Uploads"),
        ("scan", "from .app import create_app"),
        ("indexer", "def f():\n    import waitress"),
        ("app", "import waitress.server"),
        ("upload", "from pkgserver import site"),
        ("errors", "import socket"),
    ],
)
def test_the_check_catches_a_forbidden_import(module: str, line: str) -> None:
    assert violations(module, line + "\n"), f"{line!r} in {module} was not caught"
