"""Result codes and the exception that carries them.

sanlock reports every failure as a negative integer: its own ``SANLK_*``
codes (-200 and below) or a negated errno.  leased keeps exactly those
numbers, because they cross the wire to unmodified clients and appear in
scripts that parse ``sanlock`` output.  Inside leased a failure is a
:class:`LeaseError` that carries the code plus a sentence saying what failed
and where, so the one boundary that reports it (a reply, a CLI line, a log
line) never has to guess.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ResultCode(IntEnum):
    """sanlock's result codes (``sanlock_rv.h``) and the errno values it uses."""

    OK = 0
    EPERM = -errno.EPERM
    ENOENT = -errno.ENOENT
    ESRCH = -errno.ESRCH
    EIO = -errno.EIO
    E2BIG = -errno.E2BIG
    EBADF = -errno.EBADF
    EAGAIN = -errno.EAGAIN
    ENOMEM = -errno.ENOMEM
    EACCES = -errno.EACCES
    EBUSY = -errno.EBUSY
    EEXIST = -errno.EEXIST
    ENODEV = -errno.ENODEV
    EINVAL = -errno.EINVAL
    ENOSPC = -errno.ENOSPC
    ENAMETOOLONG = -errno.ENAMETOOLONG
    EPROTO = -errno.EPROTO
    EALREADY = -errno.EALREADY
    EUCLEAN = -errno.EUCLEAN
    ETIMEDOUT = -errno.ETIMEDOUT
    ENOTTY = -errno.ENOTTY
    ERANGE = -errno.ERANGE
    ENOCSI = -errno.ENOCSI
    ELIBACC = -errno.ELIBACC
    ELIBBAD = -errno.ELIBBAD
    ELIBSCN = -errno.ELIBSCN
    EOPNOTSUPP = -errno.EOPNOTSUPP
    ENOTCONN = -errno.ENOTCONN
    EINPROGRESS = -errno.EINPROGRESS
    ESTALE = -errno.ESTALE

    ERROR = -201
    WD_ERROR = -203

    AIO_TIMEOUT = -202
    DBLOCK_READ = -210
    DBLOCK_WRITE = -211
    DBLOCK_LVER = -212
    DBLOCK_MBAL = -213
    DBLOCK_CHECKSUM = -214
    LEADER_READ = -220
    LEADER_WRITE = -221
    LEADER_DIFF = -222
    LEADER_MAGIC = -223
    LEADER_VERSION = -224
    LEADER_SECTORSIZE = -225
    LEADER_LOCKSPACE = -226
    LEADER_RESOURCE = -227
    LEADER_NUMHOSTS = -228
    LEADER_CHECKSUM = -229
    ADDLS_SIZES = -230
    ADDLS_INVALID_HOSTID = -231
    ACQUIRE_LVER = -240
    ACQUIRE_LOCKSPACE = -241
    ACQUIRE_IDDISK = -242
    ACQUIRE_IDLIVE = -243
    ACQUIRE_OWNED = -244
    ACQUIRE_OTHER = -245
    ACQUIRE_SHRETRY = -246
    ACQUIRE_OWNED_RETRY = -247
    RELEASE_LVER = -250
    RELEASE_OWNER = -251
    RENEW_OWNER = -260
    RENEW_DIFF = -261
    HOSTID_BUSY = -262
    REQUEST_MAGIC = -270
    REQUEST_VERSION = -271
    REQUEST_OLD = -272
    REQUEST_LVER = -273


# Leader verification failures that mean "this sector is not what we wrote or
# expect" rather than "the storage did not answer".  A renewal that sees one
# fails its lockspace at once (on-disk spec §5.2).
CORRUPTION_CODES = frozenset(
    {
        ResultCode.RENEW_OWNER,
        ResultCode.RENEW_DIFF,
        ResultCode.LEADER_MAGIC,
        ResultCode.LEADER_VERSION,
        ResultCode.LEADER_SECTORSIZE,
        ResultCode.LEADER_LOCKSPACE,
        ResultCode.LEADER_CHECKSUM,
    }
)


def code_name(rc: int) -> str:
    """The symbolic name of a result code, or the bare number if it has none."""
    try:
        return ResultCode(rc).name
    except ValueError:
        return str(rc)


class LeaseError(Exception):
    """A lease operation failed with a sanlock result code.

    ``rc`` is the negative code that a client or script sees; ``detail`` says
    what failed and where (path, offset, field) for the log line or CLI
    message.
    """

    def __init__(self, rc: int, detail: str) -> None:
        super().__init__(rc, detail)
        self.rc = int(rc)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.detail} (error {self.rc} {code_name(self.rc)})"


class Refused(LeaseError):
    """A request refused by a check, leaving everything as it was: its sentence alone says why.

    Reported as the sentence without the code suffix of a failed operation
    (``empty name, host_id 0 or empty path``, not ``... (error -22 EINVAL)``).
    """


class QuietRefusal(LeaseError):
    """A refusal that is an ordinary answer, not a fault: replied with its code, not logged.

    The lockspace is already joined or still joining, a removal is in
    progress, the lease is already in the mode asked for.
    """


def rc_from_oserror(exc: OSError) -> int:
    """The negative errno sanlock would report for an OS error."""
    return -(exc.errno or errno.EIO)
