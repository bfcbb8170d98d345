"""Tests for files.py: the lock (one writer per folder, with real processes: a living holder refuses, a
dead one's lock is taken over), a file's sha256, writing whole or not at all, and a failed write (a
full disk, safetensors' own error for one) said in one line that names the file."""

import errno
import hashlib
import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT
from safetensors import SafetensorError
from safetensors.torch import save_file

import files

HOLD = textwrap.dedent("""
    import sys, time
    import files
    with files.lock(sys.argv[1], command="train.py teacher --out " + sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()  # until the test says so
""")


def holder(folder):
    """A real process that holds folder's lock until its stdin closes."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline() == "held\n"
    return p


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    folder = tmp_path / "runs" / "teacher"
    p = holder(folder)
    try:
        with pytest.raises(files.FolderBusy) as e:
            with files.lock(folder):
                pass
        message = str(e.value)
        assert message.startswith(f"{folder}: being written by process {p.pid} (`train.py teacher --out {folder}`, since ")
        assert "one writer at a time" in message and "\n" not in message
    finally:
        p.communicate("")
    assert p.returncode == 0 and not files.lock_path(folder).exists()  # released: the record goes with it
    with files.lock(folder):  # free again, and nothing to say about it
        assert files.lock_path(folder).is_file()
    assert capsys.readouterr().err == "" and not files.lock_path(folder).exists()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path, capsys):
    folder = tmp_path / "run"
    p = holder(folder)
    p.kill()  # kill -9: no finally, no release; the record stays, the operating system's lock goes
    p.wait()
    assert files.lock_path(folder).is_file()
    with files.lock(folder):
        err = capsys.readouterr().err
        assert err == (f"note: {folder}: took over the lock of process {p.pid} (`train.py teacher --out {folder}`, "
                       f"since {err.split('since ')[1].split(')')[0]}), which ended without releasing it\n")
    assert not files.lock_path(folder).exists()


def test_the_lock_leaves_no_folder_it_made(tmp_path):
    folder = tmp_path / "a" / "b" / "run"
    with files.lock(folder):
        assert files.lock_path(folder).parent.is_dir()
    assert not (tmp_path / "a").exists()


def test_sha256_file_reads_in_chunks(tmp_path):
    data = os.urandom(3 * 1000 + 7)
    (tmp_path / "w").write_bytes(data)
    assert files.sha256_file(tmp_path / "w", chunk=1000) == hashlib.sha256(data).hexdigest()


def test_a_full_disk_in_safetensors_is_an_os_error_naming_the_file(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*a, **kw):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "serialize_file", full)
    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as e:
        files.atomic_write(target, lambda p: safetensors.torch.save_file({"w": torch.zeros(2)}, p))
    assert files.os_error_message(e.value) == f"{target}: no space left on device"
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_a_real_write_past_a_file_size_limit_names_the_file(tmp_path):
    """A real failing write in a real process (a file-size limit: the kernel refuses the bytes, as a full
    disk does), through safetensors and through a plain write."""
    script = textwrap.dedent("""
        import sys, torch
        from safetensors.torch import save_file
        import files
        for name, write in (("model.safetensors", lambda p: save_file({"w": torch.zeros(100000)}, p)),
                            ("log.txt", lambda p: open(p, "w").write("x" * 100000))):
            try:
                files.atomic_write(sys.argv[1] + "/" + name, write)
            except OSError as e:
                print(files.os_error_message(e))
    """)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))

    p = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.splitlines() == [f"{tmp_path}/model.safetensors: file too large", f"{tmp_path}/log.txt: file too large"], p.stderr


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"the old one")

    def full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name

    with pytest.raises(OSError) as e:
        files.atomic_write(target, full)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert files.os_error_message(e.value) == f"{target}: no space left on device"
    assert target.read_bytes() == b"the old one" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_safetensors_own_error_on_a_full_disk_is_an_os_error_naming_the_file(tmp_path):
    def full(tmp):
        save_file({"w": torch.zeros(2)}, tmp)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")  # its words

    with pytest.raises(OSError) as e:
        files.atomic_write(tmp_path / "model.safetensors", full)
    assert files.os_error_message(e.value) == f"{tmp_path / 'model.safetensors'}: no space left on device"
    assert list(tmp_path.iterdir()) == []


def test_what_is_not_a_write_error_is_raised_as_it_is(tmp_path):
    other = SafetensorError("some other failure")
    assert files.os_error_message(files.write_error(other, tmp_path / "x")) == f"{tmp_path / 'x'}: some other failure"
    cut = files.DownloadError("download truncated")  # a ConnectionError: an OSError without errno, the caller's to word
    assert files.write_error(cut, tmp_path / "x") is cut
    named = FileNotFoundError(errno.ENOENT, "No such file or directory", "/the/source")
    assert files.write_error(named, tmp_path / "x") is named  # a copy's source keeps its own name
    assert files.write_error(ValueError("x"), tmp_path / "x") is None
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "y", lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    assert list(tmp_path.iterdir()) == []
