"""Running the embedded PostgreSQL when livesell runs as root.

PostgreSQL refuses to run as root, so it runs as the system user `PG_SYSTEM_USER`, with that
user's group and no other. Each change this needs is logged before it is made: the user is
created when missing, PostgreSQL's own directory is given to it, the data dir holding that
directory gains search permission (o+x, never read) when the user cannot pass through it, and
files of the PostgreSQL install it cannot read are made readable. No directory above the data
dir (or above the install) is ever changed: when one keeps the user out, start-up stops with
an EmbeddedServerError naming it.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
import subprocess
from pathlib import Path

from core.embedded import PG_SYSTEM_USER, EmbeddedServerError, pg_install_dir

log = logging.getLogger("livesell.embedded")


def prepare(pgdata: Path) -> None:
    """Let the system user run PostgreSQL on `pgdata`, changing only what it must: its own
    account, the owner of `pgdata`, search permission on the data dir (`pgdata`'s parent) and
    read permission inside the PostgreSQL install, each logged before it is made."""
    user = system_user()
    install = pg_install_dir()
    data_dir = pgdata.parent
    elsewhere = {
        "the data dir": "choose a data dir it can reach (LIVESELL_DATA_DIR=/var/lib/livesell, say)",
        "PostgreSQL's install": "install livesell where other users can read it",
    }
    for path, holds in ((data_dir, "the data dir"), (install, "PostgreSQL's install")):
        blocked = next((p for p in reversed(path.parents) if not _can(user, p, "x")), None)
        if blocked is not None:
            raise EmbeddedServerError(
                f"PostgreSQL refuses to run as root, so livesell runs it as the system user "
                f"{user.pw_name}, who cannot pass through {blocked} (mode "
                f"{stat.filemode(blocked.stat().st_mode)}) to reach {holds} {path}. "
                f"livesell never changes a directory above {holds}: {elsewhere[holds]}, allow "
                f"it yourself (chmod o+x {blocked}), or run livesell as a user other than root."
            )
    if not _can(user, data_dir, "x"):
        log.warning(
            "adding search permission (o+x, not read) on the data dir %s so that the "
            "system user %s can reach PostgreSQL's data in it",
            data_dir,
            user.pw_name,
        )
        data_dir.chmod(data_dir.stat().st_mode | stat.S_IXOTH)
    owner = pgdata.stat()
    if (owner.st_uid, owner.st_gid) != (user.pw_uid, user.pw_gid):
        log.info("giving %s to the system user %s", pgdata, user.pw_name)
        os.chown(pgdata, user.pw_uid, user.pw_gid)
    share_install(install, user)


def system_user(name: str = PG_SYSTEM_USER) -> pwd.struct_passwd:
    """The account of the system user running PostgreSQL, created (a system user without a
    home or a login shell) when missing, and said so before."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log.warning(
        "creating the system user %s to run the embedded PostgreSQL, which refuses to run "
        "as root (no home directory, no login shell)",
        name,
    )
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "--user-group", name],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        raise EmbeddedServerError(
            f"could not create the system user {name} that runs the embedded "
            f"PostgreSQL as root ({detail}); create it yourself, or run livesell as a user "
            "other than root"
        ) from None
    return pwd.getpwnam(name)


# which permission bits grant read (r) or search/execute (x) to the owner, the group and others
_BITS = {
    "r": (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH),
    "x": (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH),
}


def _can(user: pwd.struct_passwd, path: Path, what: str) -> bool:
    """Whether `user` may read (`r`) or search/execute (`x`) `path`, by its mode bits."""
    info = path.stat()
    owner, group, other = _BITS[what]
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & owner)
    if info.st_gid == user.pw_gid or user.pw_name in _members(info.st_gid):
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


def _members(gid: int) -> list[str]:
    try:
        return grp.getgrgid(gid).gr_mem
    except KeyError:  # a group id without a name
        return []


def share_install(install: Path, user: pwd.struct_passwd) -> None:
    """Make the PostgreSQL install readable (and its programs runnable) by `user` where it is
    not yet: pip usually installs it so, and then nothing changes."""
    missing: list[tuple[Path, int]] = []
    for path in [install, *sorted(install.rglob("*"))]:
        if path.is_symlink():
            continue
        runnable = path.is_dir() or path.parent == install / "bin"
        bits = stat.S_IROTH | (stat.S_IXOTH if runnable else 0)
        if not _can(user, path, "r") or (runnable and not _can(user, path, "x")):
            missing.append((path, bits))
    if not missing:
        return
    log.warning(
        "making %d files of the PostgreSQL install under %s readable by others (o+r, and o+x "
        "on its directories and programs) so that the system user %s can run it",
        len(missing),
        install,
        user.pw_name,
    )
    for path, bits in missing:
        path.chmod(path.stat().st_mode | bits)
