"""Demo: save sample images from a local registry on 127.0.0.1 into an archive.

Starts a throw-away registry, pushes synthetic multi-platform images to it, writes an image
list (with one missing image, to show the failed list) and runs the workflow in ./demo/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.images import push_catalogue  # noqa: E402
from support.registry import Registry  # noqa: E402


def main() -> int:
    demo = REPO / "demo"
    shutil.rmtree(demo, ignore_errors=True)  # each demo starts from scratch
    demo.mkdir()
    with Registry(demo / "registry") as registry:
        images = push_catalogue(registry.host)
        lines = ["# demo image list", *(image.ref for image in images.values())]
        lines.append(f"{registry.host}/rancher/not-there:1.0")
        (demo / "images.txt").write_text("\n".join(lines) + "\n")
        (demo / "config.yaml").write_text("file: images.txt\ntls_verify: false\n")
        command = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--cores", "4", "--configfile", "config.yaml",
        ]  # fmt: skip
        print("$", " ".join(command[2:]), f"(in {demo})", flush=True)
        done = subprocess.run(command, cwd=demo)
    if done.returncode != 0:
        return done.returncode
    print("\nArchive:", flush=True)
    subprocess.run(["ls", "-l", "saved-images.tar.gz", "saved-images.tar.gz.sha256"], cwd=demo)
    subprocess.run(["sha256sum", "-c", "saved-images.tar.gz.sha256"], cwd=demo)
    print("\nFailed list (save-failed.txt):", flush=True)
    print((demo / "save-failed.txt").read_text(), end="")
    print("\nFirst entries of the archive:", flush=True)
    listing = subprocess.run(
        ["tar", "-tzf", "saved-images.tar.gz"], cwd=demo, capture_output=True, text=True
    )
    print("\n".join(listing.stdout.splitlines()[:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
