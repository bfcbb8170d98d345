"""
The file plumbing every other module needs, in one place: writing a file so that it is either
whole or absent, one writer per folder (a lock), a file's sha256, downloading into the cache,
reading safetensors with an error that names the file, progress bars that are there when tqdm
is, and DataError, the error of input that cannot be used as it is.

This is the ground floor: it imports nothing from the project, and model.py, lora.py and the data
modules (wordpiece.py, readers.py, corpus.py, splits.py, batching.py) may use it (the one exception
to "model.py imports nothing from the project").
"""

import contextlib
import errno
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

UMASK = os.umask(0o22)
os.umask(UMASK)  # read once: os.umask can only be read by setting it


def cache_root() -> Path:
    """Where downloads are kept: $NANOBERT_CACHE, else ~/.cache/nanobert."""
    return Path(os.environ.get("NANOBERT_CACHE") or Path.home() / ".cache" / "nanobert")


class DataError(ValueError):
    """Input that cannot be used as it is; the message names the file, the row and what was expected."""


# -----------------------------------------------------------------------------
# Writing: whole or not at all


def atomic_write(path, write):
    """Call write(tmp_path), then rename the result into place: a reader (or a run killed halfway)
    never sees half a file, and a failed write leaves the old file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and beside the target: os.replace is atomic only within one filesystem.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes a private file; the result is an ordinary one
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        failed = write_error(e, path, tmp)
        if failed is None:
            raise
        raise failed from None


def write_error(e: BaseException, path, tmp=None) -> OSError | None:
    """The OSError, naming path, of a write that failed: a full disk, a read-only file system. A plain
    write raises OSError without a file name; safetensors raises its own SafetensorError with the
    system's words in the message ('No space left on device (os error 28)'). None: not a write error."""
    if isinstance(e, OSError):
        # Only the system's own errors (an errno) without a file of their own (a copy's source) are renamed;
        # others (a download cut short, a URLError) are the caller's to word.
        if e.errno is None or e.filename and str(e.filename) != str(tmp):
            return e
        return OSError(e.errno, e.strerror or str(e), str(path))
    if type(e).__name__ == "SafetensorError":  # by name: this module does not import safetensors
        code = re.search(r"os error (\d+)", str(e))
        number = int(code.group(1)) if code else errno.EIO
        return OSError(number, os.strerror(number) if code else str(e), str(path))
    return None


def os_error_message(e: OSError) -> str:
    """One line for an OSError: the file and what the system said (read-only, not a folder, disk full)."""
    if e.filename and e.strerror:
        return f"{e.filename}: {e.strerror.lower()}"
    return str(e)


def nearest_folder(path) -> Path:
    """The deepest part of path that exists (path itself, or a parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path, flag):
    """Raise ValueError naming flag unless path (a folder, existing or to be made) can be written."""
    existing = nearest_folder(path)
    if not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is a file; expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {existing} is not writable; expected a folder you can write to")


def write_bytes(path, data: bytes):
    atomic_write(path, lambda p: Path(p).write_bytes(data))


def write_text(path, text: str):
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# -----------------------------------------------------------------------------
# One writer per folder


class FolderBusy(ValueError):
    """A folder that another living process is writing; the message names that process."""


def lock_path(folder) -> Path:
    """The lock of a folder lies beside it (.<name>.lock), so that it outlives the folder's renames
    (a replacement swapped in, an export moved into place) and exists before the folder does."""
    folder = Path(folder).absolute()
    return folder.with_name(f".{folder.name}.lock")


@contextlib.contextmanager
def lock(folder, command=None):
    """
    Hold the folder's lock while writing it: a second process that asks for it is refused with a
    FolderBusy that names the holder (its pid, its command, since when). The lock is the operating
    system's (flock): it goes with its process, however that process ends. The file only records who
    holds it, for the message; a record left by a process that died without releasing its lock is
    taken over, with a note that says so. (Where fcntl is missing, on Windows, nothing is locked.)
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = lock_path(folder)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_lock_record(fd, wait=True)
            os.close(fd)
            raise FolderBusy(f"{folder}: being written by {holder}; one writer at a time: wait for it to end, or "
                             "stop it") from None
        # The file may have been released and removed between our open and our lock: lock the one in place.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        stale = read_lock_record(fd)
        if stale:
            print(f"note: {folder}: took over the lock of {stale}, which ended without releasing it", file=sys.stderr)
        command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        record = {"pid": os.getpid(), "command": command, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):  # still ours: only a holder removes it
            os.unlink(path)
        os.close(fd)
        for parent in made:  # the folders made for the lock go, unless the run came to live in them
            try:
                parent.rmdir()
            except OSError:
                break


def read_lock_record(fd, wait=False) -> str:
    """Who a lock file says holds it: 'process 123 (`train.py ...`, since 2025-01-31 12:00:00)', or ''.
    wait: the holder may be between taking the lock and writing its record; give it a moment."""
    for _ in range(20 if wait else 1):
        raw = os.pread(fd, 1 << 16, 0)
        if raw:
            break
        time.sleep(0.05)
    try:
        r = json.loads(raw)
        return f"process {r['pid']} (`{r['command']}`, since {r['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process" if wait or raw else ""


def sha256_file(path, chunk=1 << 20) -> str:
    """The sha256 of a file, read a MiB at a time (model weights can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -----------------------------------------------------------------------------
# Reading weights


def read_safetensors(path) -> dict:
    """The tensors of a safetensors file; a damaged file is a ValueError that names it."""
    from safetensors.torch import load_file  # here, not at the top: the data modules use this one without torch work

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected a safetensors file")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for truncated / corrupt files
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


def read_safetensors_metadata(path) -> dict:
    """The string metadata stored in a safetensors header ({} when there is none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


# -----------------------------------------------------------------------------
# Progress bars: tqdm is optional


class NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def progress(iterable, total=None, desc=None, enabled=True):
    """iterable wrapped in a tqdm bar when enabled and tqdm is installed, else unchanged."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:
            pass
    return iterable


def progress_bar(total, desc, enabled=True, unit="B"):
    """A counter of bytes (downloads) or of another unit: tqdm's, or one that does nothing."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit=unit if unit == "B" else f" {unit}", unit_scale=True, leave=False,
                        dynamic_ncols=True)
        except ImportError:
            pass
    return NoBar()


# -----------------------------------------------------------------------------
# Downloading


class DownloadError(ConnectionError):
    """A transfer that ended before the promised number of bytes."""


def download(url: str, dest, *, check=None, desc=None, progress=True, timeout=60) -> Path:
    """
    Stream url into dest. dest only ever appears complete: a transfer cut short, or a file that
    check(tmp_path) rejects, leaves nothing behind. Network failures raise urllib's errors
    (URLError, HTTPError) for the caller to word; a short transfer raises DownloadError.
    """
    dest = Path(dest)

    def write(tmp):
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = progress_bar(total, desc or dest.name, progress)
            size = 0
            try:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            except http.client.IncompleteRead as e:  # the server promised more bytes than it sent
                size += len(e.partial)
            finally:
                bar.close()
        # A dropped connection can look like a normal end of file: only the length tells.
        if total is not None and size != total:
            raise DownloadError(f"{url}: download truncated (transfer cut short: got {size} of {total} bytes); "
                                "nothing was saved, try again")
        if check:
            check(tmp)

    atomic_write(dest, write)
    return dest
