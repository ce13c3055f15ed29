"""Ownership of an ``aion-fast encode`` output directory: an advisory lock and the job's recorded identity.

Lock: ``<output>/.aion-fast.lock``, ``fcntl.flock`` on it for the life of the job (the kernel drops it when the
process ends, however it ends). A single-process job holds it exclusively; the ranks of a distributed job (torchrun,
SLURM) share it and each holds ``<output>/.aion-fast.rank<R>-of-<W>.lock`` exclusively, so two jobs never write one
output at once while one job's ranks do. The holder writes its pid, host and start time into the file, so a refused
job names who holds it. Where ``flock`` is unsupported (some network filesystems) the lock is the file's existence
(``O_EXCL``), and a file naming a pid of this host that no longer runs is a stale lock, taken over.

Identity: ``<output>/job.json``, the job description (model and codec digests, options that change the bytes),
written by the first run; a run with another description refuses.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "OutputLock", "OutputLockedError", "check_identity"]

LOCK_NAME = ".aion-fast.lock"
IDENTITY_NAME = "job.json"


class OutputLockedError(ValueError):
    """Another job (or another rank with the same number) is writing the output directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder_text(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "an unknown process", {}
    if not isinstance(info, dict):
        return "an unknown process", {}
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')} (started {started})", info


class OutputLock:
    """Holds the lock(s) of one job (or one rank of a distributed job) on an output directory.

    Args:
        output: the output directory (created).
        rank, world_size: this process's rank; ``world_size > 1`` takes the shared job lock and a rank lock.

    Raises:
        OutputLockedError: another job holds the output (or another process holds this rank's lock).
    """

    def __init__(self, output: str | os.PathLike, rank: int = 0, world_size: int = 1):
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self._held: list[tuple[Path, int | None]] = []
        try:
            if world_size > 1:
                self._take(self.output / LOCK_NAME, shared=True)
                self._take(self.output / f".aion-fast.rank{rank}-of-{world_size}.lock", shared=False)
            else:
                self._take(self.output / LOCK_NAME, shared=False)
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path, shared: bool) -> None:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder, info = _holder_text(path)
                stale = (
                    info.get("host") == socket.gethostname()
                    and isinstance(info.get("pid"), int)
                    and not (_pid_alive(info["pid"]))
                )
                hint = " Wait for it to finish, or give another --output."
                if stale:
                    hint = (f" The recorded holder no longer runs (a stale lock of a network filesystem): delete "
                            f"{path} if no job is running.")  # fmt: skip
                raise OutputLockedError(
                    f"--output {self.output} is in use by another aion-fast encode: {holder} holds {path.name}.{hint}"
                ) from None
            self._take_exclusive_file(path)
            return
        if not shared:  # the holder's name, for a refused job's message
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self._info()).encode(), 0)
        elif os.fstat(fd).st_size == 0:
            os.pwrite(fd, json.dumps(self._info()).encode(), 0)
        self._held.append((path, fd))

    def _take_exclusive_file(self, path: Path) -> None:
        """No ``flock`` here: the lock is a file created with ``O_EXCL`` (``path`` + ``.pid``)."""
        marker = path.with_name(path.name + ".pid")
        for _ in range(2):
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder, info = _holder_text(marker)
                pid = info.get("pid")
                if info.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
                    marker.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise OutputLockedError(
                    f"--output {self.output} is in use by another aion-fast encode: {holder} holds {marker.name}. "
                    f"Wait for it to finish, or give another --output."
                )
            os.write(fd, json.dumps(self._info()).encode())
            os.close(fd)
            self._held.append((marker, None))
            return

    @staticmethod
    def _info() -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}

    def release(self) -> None:
        """Drops every lock held (also done by the kernel when the process ends)."""
        for path, fd in reversed(self._held):
            if fd is None:
                path.unlink(missing_ok=True)
            else:
                os.close(fd)
        self._held = []

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


#: Identity keys written by earlier versions (the retired untrained-demo flag), ignored when comparing.
RETIRED_IDENTITY_KEYS = frozenset({"untrained_demo_checkpoint"})


def check_identity(output: str | os.PathLike, job: dict[str, Any], record: bool = True) -> None:
    """Records ``job`` as the identity of ``output`` (first run; with ``record``), or refuses another job's output.

    Raises:
        OutputConflictError: ``output/job.json`` names another job (model, codec configs or options differ).
    """
    from aion_fast.jobs.manifest import atomic_write_text, read_record, warn
    from aion_fast.jobs.plan import OutputConflictError, differences

    path = Path(output) / IDENTITY_NAME
    recorded = read_record(path) if path.exists() else None
    if path.exists() and recorded is None:  # torn: the shard records still say which job wrote them
        warn(f"{path} is torn or empty; it is written again.")
    current = recorded
    if isinstance(recorded, dict):
        # Keys earlier versions wrote and this one does not; the checkpoint digest still tells models apart.
        current = {key: value for key, value in recorded.items() if key not in RETIRED_IDENTITY_KEYS}
    if isinstance(current, dict) and current != job:
        raise OutputConflictError(
            f"{output} belongs to another job ({path.name}: {differences(current, job)}); write this job to a new "
            f"--output directory (results of different models, codec configs or options never share one)."
        )
    if recorded != job and record:
        atomic_write_text(path, json.dumps(job, indent=2, sort_keys=True))
