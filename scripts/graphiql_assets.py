"""Fetch GraphiQL's assets again from the npm registry: ``python scripts/graphiql_assets.py``.

Reproduces app/graphql/static/graphiql from the packages pinned in app/graphql/graphiql.py: each
package is fetched with ``npm pack`` (the ordinary npm client, so its registry configuration
applies), each asset is checked against its pinned SHA-384 digest and refused if it differs,
and each package's licence file is copied beside the assets. Run it after changing a pin;
``git diff`` then shows exactly which files changed.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.graphql.graphiql import ASSETS, LICENSES, STATIC_DIR


def pack(package: str, into: Path) -> Path:
    done = subprocess.run(
        ["npm", "pack", "--silent", "--pack-destination", str(into), package],
        check=True,
        capture_output=True,
        text=True,
    )
    return into / done.stdout.strip().splitlines()[-1]


def member(tarball: Path, name: str) -> bytes:
    with tarfile.open(tarball) as archive:
        extracted = archive.extractfile(name)
        if extracted is None:
            raise SystemExit(f"{tarball.name} has no file {name}")
        return extracted.read()


def main() -> int:
    packages = sorted({asset.package for asset in ASSETS} | {lic[0] for lic in LICENSES})
    with tempfile.TemporaryDirectory() as tmp:
        tarballs = {package: pack(package, Path(tmp)) for package in packages}
        files: dict[str, bytes] = {}
        for asset in ASSETS:
            data = member(tarballs[asset.package], asset.member)
            digest = base64.b64encode(hashlib.sha384(data).digest()).decode()
            if digest != asset.sha384:
                raise SystemExit(
                    f"{asset.package} {asset.member}: sha384 {digest}, pinned {asset.sha384}"
                )
            files[asset.name] = data
        for package, name, target in LICENSES:
            files[f"licenses/{target}"] = member(tarballs[package], name)
    if STATIC_DIR.exists():
        shutil.rmtree(STATIC_DIR)
    for name, data in files.items():
        path = STATIC_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sys.stdout.write(f"{path.relative_to(STATIC_DIR.parents[3])}  {len(data)} bytes\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
