"""Every file the browser client is served from ships in the wheel (pyproject package-data).

The relay reads the page from its installed package, so a module missing
from ``[tool.setuptools.package-data]`` works from a checkout and 404s from
a wheel.  setuptools expands each pattern with ``glob`` relative to the
package folder (``**`` spanning folders); these tests expand them the same
way and compare with what m42d.web.pages would serve.
"""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

from m42d.web import pages

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "m42d" / "web"


def patterns() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data: list[str] = config["tool"]["setuptools"]["package-data"]["m42d.web"]
    return data


def shipped(package: Path) -> set[str]:
    """Files under ``package`` that the package-data patterns take, as setuptools expands them."""
    found: set[str] = set()
    for pattern in patterns():
        for match in glob.glob(str(package / pattern), recursive=True):
            path = Path(match)
            if path.is_file():
                found.add(path.relative_to(package).as_posix())
    return found


def servable(package: Path) -> set[str]:
    """Files under ``package`` that pages serves (by suffix), Python caches aside."""
    return {
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix in pages.CONTENT_TYPES and "__pycache__" not in path.parts
    }


def test_every_served_file_of_the_page_is_package_data() -> None:
    missing = servable(WEB) - shipped(WEB)
    assert not missing, f"add to [tool.setuptools.package-data] m42d.web: {sorted(missing)}"
    served = {path.lstrip("/") for path in pages.served_paths()}
    served -= {"", pages.WORDLIST_PATH.lstrip("/")}  # index.html; m42d.crypto's data
    assert served <= shipped(WEB)


def test_module_folders_added_later_ship_too(tmp_path: Path) -> None:
    """lib/session/*.js, a new engine/ folder, and deeper: no folder is left out."""
    for name in ("index.html", "lib/a.js", "lib/session/b.js", "lib/x/y/c.js", "engine/d.js"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert servable(tmp_path) <= shipped(tmp_path)
