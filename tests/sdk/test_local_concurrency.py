"""Two processes writing one local folder: readers only ever see whole values, never torn files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kvbox.sdk import Configuration, KeyValueStoreSync

SIZE = 200_000
KEYS = [f"k{i}" for i in range(4)]

WRITER = r"""
import sys
from kvbox.sdk import Configuration, KeyValueStoreSync
storage, writer, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kvs = KeyValueStoreSync.open(name="shared", configuration=Configuration(storage_dir=storage))
for i in range(rounds):
    for n, key in enumerate(["k0", "k1", "k2", "k3"]):
        mark = f"w{writer}-{i}-"
        kind = (i + n + writer) % 3  # the type changes from round to round, differently per writer
        if kind == 0:
            kvs.set_value(key, {"mark": mark, "pad": "x" * SIZE})
        elif kind == 1:
            kvs.set_value(key, mark + "y" * SIZE + "END")
        else:
            kvs.set_value(key, mark.encode() + b"z" * SIZE + b"END")
KeyValueStoreSync.close_all()
""".replace("SIZE", str(SIZE))


def whole(value: object) -> bool:
    """True for a complete value of any of the writers' three shapes."""
    if isinstance(value, dict):
        return len(value["pad"]) == SIZE and value["mark"].startswith("w")
    if isinstance(value, str):
        return value.startswith("w") and value.endswith("y" * 100 + "END")
    if isinstance(value, bytes):
        return value.startswith(b"w") and value.endswith(b"z" * 100 + b"END")
    return False


def test_two_writer_processes_never_leave_torn_files(tmp_path: Path) -> None:
    storage = str(tmp_path / "storage")
    config = Configuration(storage_dir=storage)
    reader = KeyValueStoreSync.open(name="shared", configuration=config)
    for key in KEYS:
        reader.set_value(key, {"mark": "w-initial", "pad": "x" * SIZE})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, storage, str(n), "60"], env=env, stderr=subprocess.PIPE)
        for n in (1, 2)
    ]
    reads = 0
    try:
        # Read while both writers run (the loop ends when they do): every read is one whole value.
        while any(w.poll() is None for w in writers) or reads < 50:
            for key in KEYS:
                value = reader.get_value(key)
                assert whole(value), (key, type(value), str(value)[:80])
                reads += 1
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
        errors = [w.communicate(timeout=60)[1].decode() for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    KeyValueStoreSync.close_all()

    # Afterwards each key holds one whole value, and no temporary file is left behind.
    final = KeyValueStoreSync.open(name="shared", configuration=config)
    assert [i.key for i in final.list_keys()] == KEYS
    for key in KEYS:
        assert whole(final.get_value(key))
    names = os.listdir(tmp_path / "storage" / "key_value_stores" / "shared")
    assert not [n for n in names if n.endswith(".tmp")], names
    meta = json.loads((tmp_path / "storage" / "key_value_stores" / "shared" / "__metadata__.json").read_text())
    assert meta["id"] == final.id
    KeyValueStoreSync.close_all()
