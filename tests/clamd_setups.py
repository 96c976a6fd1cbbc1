"""clamd set up the ways found in the wild, and the file that got past one of them (issue 14)."""

from __future__ import annotations

import io
import zipfile

from cluster.cli.samples import EICAR, scene

# The limits of the clamd.conf that Debian 12's clamav-daemon 1.4.6 writes on installation.
DEBIAN_CLAMD = {
    "StreamMaxLength": "25M", "MaxFileSize": "25M", "MaxScanSize": "100M", "MaxRecursion": "16",
    "MaxFiles": "10000", "MaxScanTime": "120000", "MaxEmbeddedPE": "10M",
    "MaxHTMLNormalize": "10M", "MaxHTMLNoTags": "2M", "MaxScriptNormalize": "5M",
    "MaxZipTypeRcg": "1M", "MaxPartitions": "50", "MaxIconsPE": "100", "PCREMaxFileSize": "25M",
    "ScanArchive": "true", "AlertExceedsMax": "no",
}
# clamd's own defaults (clamd.conf(5)), what an image that leaves the lines unset runs with.
CLAMAV_DEFAULTS = {"MaxFileSize": "100M", "MaxScanSize": "400M", "MaxRecursion": "17",
                   "AlertExceedsMax": "no"}
HIDDEN_PAST = 30 * 1024 * 1024


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def attack_jpeg() -> bytes:
    """A real JPEG, then a ZIP whose one member is 30 MB of zeros ending in the EICAR file.

    Signature databases know EICAR as a whole file (a hash), so it rides zipped inside the
    member; 30 MB of zeros deflate to about 30 KB, so the upload is small.
    """
    photo = scene(640, 480, 7).jpegsave_buffer(Q=85)
    return photo + zipped("payload.bin", bytes(HIDDEN_PAST) + zipped("eicar.com", EICAR))
