"""M4V_API_KEYS_FILE: API key entries in a file that the API re-reads when it changes, so keys can be added,
rotated and revoked without restarting any replica (on Kubernetes: a Secret mounted as a volume).

Format: one "<key id>:<sha256 hex of the key>" entry per line, as `m4v keys create` prints it; blank lines and
`#` comments are skipped, a UTF-8 BOM and CRLF line ends are tolerated. Errors name the line number, never the
line: it holds a hash.

When the file is looked at: on the request path, not by a thread. service.auth.Keyring asks KeysFile.poll()
on each authenticated request; at most once per `api_keys_reload_s` that costs one os.stat() of the path, and
only when the file's identity (device, inode, size, mtime) differs from the version last read is it opened,
read and parsed. Why this and not a watcher thread or inotify:
- nothing to start, stop or crash, and an idle API does no work. A stat on a local or tmpfs volume (Secret
  volumes are tmpfs) takes microseconds, less than a hop to a thread, so it runs on the event loop; so does
  reading the small file when it changed. There is one event loop, hence no lock.
- a key added or removed takes effect at the first request after `api_keys_reload_s` has passed since the
  last check, so never later than that (on Kubernetes, plus the kubelet's delay in updating the volume).
- the path is resolved and the file opened anew each time. Kubernetes updates a Secret volume by writing a
  new timestamped directory and swapping the `..data` symlink, so a held file descriptor or an inotify watch
  on the old file would keep the old keys forever; os.stat() follows the symlinks to the new file (new
  inode). A subPath mount is never updated by the kubelet, which is why the chart mounts the directory.
- an edit in place that keeps the size and the mtime (same clock tick) is not seen until the next change;
  editors that save by rename, `>>` appends and the kubelet all change one of them.

A file that cannot be read or parsed does not change the keys in force: Keyring keeps the last good set and
logs an ERROR once per version of the file (a missing file counts as one version until it reappears).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

# (where, entry): where names the entry in errors ("M4V_API_KEYS_FILE line 3"); the entry is never logged.
LabelledEntry = tuple[str, str]
Signature = tuple[int, int, int, int] | str  # (st_dev, st_ino, st_size, st_mtime_ns), or why stat failed


def key_lines(text: str) -> list[LabelledEntry]:
    """The entries of a keys file, labelled with their 1-based line numbers."""
    entries: list[LabelledEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.partition("#")[0].strip()
        if entry:
            entries.append((f"M4V_API_KEYS_FILE line {number}", entry))
    return entries


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class KeysFile:
    """One keys file, re-read when its stat signature changes, looked at no more often than interval_s."""

    def __init__(self, path: str, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.interval_s = interval_s
        self._clock = clock
        self._due = float("-inf")
        self._seen: Signature | None = None

    def read(self) -> list[LabelledEntry]:
        """Read the file now, changed or not. OSError when it cannot be opened."""
        self._due = self._clock() + self.interval_s
        # errors="replace": an undecodable byte fails that line's format check (naming the line), rather
        # than a UnicodeDecodeError quoting the bytes around it.
        with open(self.path, encoding="utf-8-sig", errors="replace") as f:
            self._seen = _signature(os.fstat(f.fileno()))  # of the file read, even if the path moved on
            return key_lines(f.read())

    def poll(self) -> list[LabelledEntry] | None:
        """The file's entries if it changed since it was last read, else None (also when not yet due).
        OSError, once per failure state, when it cannot be stat'ed or read."""
        now = self._clock()
        if now < self._due:
            return None
        self._due = now + self.interval_s
        try:
            seen: Signature = _signature(os.stat(self.path))
        except OSError as exc:
            seen = f"stat failed: errno {exc.errno}"
            if seen == self._seen:
                return None
            self._seen = seen
            raise
        if seen == self._seen:
            return None
        return self.read()
