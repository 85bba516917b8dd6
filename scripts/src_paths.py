"""Put core/ and cli/ on the venv's sys.path with a .pth file, so the installed package always
wins over a directory named ``weightlab`` in the working directory.

Why: setuptools installs this two-root project (core/ and cli/) editable through an import
finder that Python consults only *after* its path search, and the path search takes a clone
named ``weightlab`` in the current directory (no ``__init__.py``) for a namespace package: a
notebook opened in the parent of ``~/weightlab`` imported the clone's root as ``weightlab`` and
``weightlab.plugins`` became the repository's ``plugins/`` folder. A regular package found
anywhere on sys.path beats namespace portions, so listing core/ and cli/ in a .pth fixes it.
(``editable_mode=compat`` adds the repository root instead, which breaks the import; ``strict``
works but needs a reinstall for every new module.)
"""

import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    pth = Path(sysconfig.get_path("purelib")) / "weightlab-src.pth"
    pth.write_text(f"{REPO / 'core'}\n{REPO / 'cli'}\n")
    print(f"wrote {pth}")
