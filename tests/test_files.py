"""Tests for files.py's writing: whole or not at all, and a failed write (a full disk, safetensors' own
error for one) said in one line that names the file."""

import errno
import os

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

import files


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
