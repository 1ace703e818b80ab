"""PEP 517 backend for the test package: a wheel holding one module and one console script,
``scriptpkg-where``, which prints the Python running it."""

import base64
import hashlib
import os
import zipfile

NAME, VERSION = "scriptpkg", "1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
METADATA = f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"
MODULE = b"import sys\n\n\ndef main():\n    print('SCRIPTPKG', sys.prefix, sys.executable)\n    return 0\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.makedirs(os.path.join(metadata_directory, DIST_INFO), exist_ok=True)
    with open(os.path.join(metadata_directory, DIST_INFO, "METADATA"), "w") as fh:
        fh.write(METADATA)
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {f"{NAME}/__init__.py": MODULE, f"{DIST_INFO}/METADATA": METADATA.encode(),
             f"{DIST_INFO}/entry_points.txt": b"[console_scripts]\nscriptpkg-where = scriptpkg:main\n",
             f"{DIST_INFO}/WHEEL": b"Wheel-Version: 1.0\nGenerator: scriptpkg\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for p, d in files.items()) + f"{DIST_INFO}/RECORD,,\n"
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{DIST_INFO}/RECORD", record)
    return wheel
