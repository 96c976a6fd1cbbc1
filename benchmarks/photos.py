"""Real photographs for the image benchmarks, from a Debian package.

The corpus is the photographs in Debian's ``lomiri-wallpapers-16.04`` package
(the wallpapers of Ubuntu Touch 16.04, from Ubuntu's community wallpaper
contest; CC BY 4.0 and CC BY-SA 4.0, see
``/usr/share/doc/lomiri-wallpapers-16.04/copyright``). It installs 15 JPEGs in
``/usr/share/backgrounds``: 14 camera photographs and one computer-drawn
gradient (``umang_by_Abhishek_Mudgal.jpg``), which is left out. With the
default ``min_pixels`` of 3 MP, 13 photographs remain: 2572x1740 to 5312x2988
(4.5 to 15.9 MP), 0.5 to 1.8 MB each, baseline sRGB JPEGs without ICC profiles
or rotating EXIF orientations.

Nothing is downloaded at run time: when the files are missing,
``photo_corpus`` raises ``CorpusMissing`` with the command that installs them.
As root, ``python benchmarks/photos.py --install`` runs that command. Without
root, extract the package anywhere and point at it::

    apt-get download lomiri-wallpapers-16.04
    dpkg -x lomiri-wallpapers-16.04_*.deb ~/photos
    .venv/bin/python benchmarks/photos.py --photos ~/photos/usr/share/backgrounds

(or set ``MEDIAFARM_PHOTOS_DIR`` to that folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "lomiri-wallpapers-16.04"
FOLDER = Path("/usr/share/backgrounds")
ENV_FOLDER = "MEDIAFARM_PHOTOS_DIR"

# The package's camera photographs (its 15th JPEG, umang_by_Abhishek_Mudgal.jpg, is a
# computer-drawn gradient). Picture_1A is 1365x1074 and falls under the default 3 MP.
PHOTOS = (
    "Bridge_by_Sander_Klootwijk.jpg",
    "Dragonfly_by_Bolly.jpg",
    "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg",
    "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg",
    "analogpattern_by_Peter_Nerlich.jpg",
    "free_by_Peter_Nerlich.jpg",
    "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
)

INSTALL_COMMAND = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]


class CorpusMissing(RuntimeError):
    """The photographs are not on disk; the message says how to get them."""


def photo_corpus(min_pixels: int = 3_000_000, folder: str | Path | None = None) -> list[Path]:
    """The corpus's photographs of at least ``min_pixels`` pixels, in a stable order.

    Looks in ``folder``, else ``$MEDIAFARM_PHOTOS_DIR``, else /usr/share/backgrounds.
    Raises ``CorpusMissing`` (with the install command) when none of them is there.
    """
    where = Path(folder or os.environ.get(ENV_FOLDER) or FOLDER).expanduser()
    found = [where / name for name in PHOTOS if (where / name).is_file()]
    if not found:
        raise CorpusMissing(missing_message(where))
    return [path for path in found if _pixels(path) >= min_pixels]


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """A benchmark's ``--photos``, ``--min-pixels`` and ``--install`` options."""
    parser.add_argument("--photos", metavar="DIR",
                        help=f"folder of the photographs (default ${ENV_FOLDER}, else {FOLDER})")
    parser.add_argument("--min-pixels", type=int, default=3_000_000,
                        help="leave out smaller photographs (default 3000000)")
    parser.add_argument("--install", action="store_true",
                        help="as root, apt-get install the photographs' package when missing")


def corpus_from_arguments(args: argparse.Namespace) -> list[Path]:
    """``photo_corpus`` for those options, installing the package first with ``--install``.

    Raises ``CorpusMissing`` when the photographs are missing and not to be installed.
    """
    try:
        return photo_corpus(args.min_pixels, args.photos)
    except CorpusMissing:
        if not args.install:
            raise
        install()
        return photo_corpus(args.min_pixels, args.photos)


def corpus_or_none(args: argparse.Namespace) -> list[Path] | None:
    """``corpus_from_arguments``, or None once it has said on stderr why there is none."""
    try:
        paths = corpus_from_arguments(args)
    except CorpusMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if not paths:
        print(f"error: no photograph has {args.min_pixels} pixels or more", file=sys.stderr)
        return None
    return paths


def missing_message(where: Path) -> str:
    return (f"the benchmark photographs are not in {where}: they come from Debian's "
            f"{PACKAGE} package.\n"
            f"  as root:  apt-get update && {' '.join(INSTALL_COMMAND)}\n"
            f"            (or: .venv/bin/python benchmarks/photos.py --install)\n"
            f"  without root:  apt-get download {PACKAGE} && "
            f"dpkg -x {PACKAGE}_*.deb DIR, then pass --photos DIR/usr/share/backgrounds "
            f"or set {ENV_FOLDER}")


def install() -> None:
    """Install the package with apt-get (root only)."""
    if os.geteuid() != 0:
        raise PermissionError(f"installing {PACKAGE} needs root: {' '.join(INSTALL_COMMAND)}")
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get not found: install Debian's {PACKAGE} package by hand")
    # apt-get's chatter goes to standard error, so that --json output stays one document.
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=sys.stderr)
    subprocess.run(INSTALL_COMMAND, check=True, stdout=sys.stderr,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def package_version() -> str | None:
    """The installed package's version, or None when dpkg does not know it."""
    if shutil.which("dpkg-query") is None:
        return None
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", PACKAGE],
                          capture_output=True, text=True)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def width_height(path: Path) -> tuple[int, int]:
    """Pixel dimensions from the file's header (nothing is decoded)."""
    import pyvips

    image = pyvips.Image.new_from_file(str(path))
    return image.width, image.height


def _pixels(path: Path) -> int:
    width, height = width_height(path)
    return width * height


def describe(paths: list[Path]) -> dict:
    """What the benchmark report says about its corpus."""
    files = []
    for path in paths:
        width, height = width_height(path)
        files.append({"name": path.name, "width": width, "height": height,
                      "megapixels": round(width * height / 1e6, 2), "bytes": path.stat().st_size})
    megapixels = [f["megapixels"] for f in files]
    return {
        "package": PACKAGE, "version": package_version(),
        "folder": str(paths[0].parent) if paths else None, "count": len(files),
        "megapixels_min": min(megapixels, default=0), "megapixels_max": max(megapixels, default=0),
        "megapixels_total": round(sum(megapixels), 1),
        "bytes_total": sum(f["bytes"] for f in files), "files": files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List (or install) the benchmark photographs.")
    parser.add_argument("--install", action="store_true",
                        help=f"apt-get install {PACKAGE} when missing (root only)")
    parser.add_argument("--photos", metavar="DIR",
                        help=f"where the JPEGs are (default ${ENV_FOLDER}, else {FOLDER})")
    parser.add_argument("--min-pixels", type=int, default=3_000_000)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    try:
        paths = photo_corpus(args.min_pixels, args.photos)
    except CorpusMissing as exc:
        if not args.install:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        install()
        paths = photo_corpus(args.min_pixels, args.photos)
    info = describe(paths)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['package']} {info['version'] or '(version unknown)'}: {info['count']} photographs "
          f">= {args.min_pixels / 1e6:g} MP in {info['folder']}, "
          f"{info['megapixels_total']} MP, {info['bytes_total'] / 1e6:.1f} MB")
    for f in info["files"]:
        print(f"  {f['name']:<40}{f['width']:>6}x{f['height']:<6}{f['megapixels']:>6.1f} MP"
              f"{f['bytes'] / 1e6:>7.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
