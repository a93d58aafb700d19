"""A PEP 517 build backend for the tests' tiny packages, so pip builds them offline.

pip's build isolation would fetch setuptools and wheel from the index under test;
this backend needs nothing, and pip runs it exactly as it runs any other (its
``build_wheel`` hook, from the sdist's ``backend-path``). Copied into each sdist.
"""

import base64
import hashlib
import os
import zipfile

NAME = os.environ.get("TINY_NAME")  # set by the tests when they call it in-process


def _meta():
    with open("PKG-INFO") as f:
        fields = dict(line.split(": ", 1) for line in f.read().splitlines() if ": " in line)
    return fields["Name"], fields["Version"]


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = _meta()
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tiny\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    filename = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []
