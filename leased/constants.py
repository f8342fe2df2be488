"""Numbers that sanlock 3.8.5 puts on disk, named as the on-disk spec names them.

Everything here is a fact of the format, not a tunable: changing a value makes
leased unable to share storage with sanlock.  Tunables live in
:mod:`leased.timeouts` and, later, in the daemon configuration.
"""

from __future__ import annotations

from typing import Final

NAME_ID_SIZE: Final = 48
"""Width of space_name and resource_name fields (bytes, NUL padded)."""

DELTA_DISK_MAGIC: Final = 0x12212010
PAXOS_DISK_MAGIC: Final = 0x06152010
PAXOS_DISK_CLEAR: Final = 0x11282016
REQ_DISK_MAGIC: Final = 0x08292011
RINDEX_DISK_MAGIC: Final = 0x01042018

DELTA_DISK_VERSION: Final = 0x00030004
PAXOS_DISK_VERSION: Final = 0x00060004
REQ_DISK_VERSION: Final = 0x00010001

DELTA_DISK_VERSION_MAJOR: Final = 0x00030000
PAXOS_DISK_VERSION_MAJOR: Final = 0x00060000
REQ_DISK_VERSION_MAJOR: Final = 0x00010000
VERSION_MAJOR_MASK: Final = 0xFFFF0000

# leader_record.flags
LFL_SHORT_HOLD: Final = 0x1
LFL_ALIGN_1M: Final = 0x10
LFL_ALIGN_2M: Final = 0x20
LFL_ALIGN_4M: Final = 0x40
LFL_ALIGN_8M: Final = 0x80
LFL_ALIGN_MASK: Final = 0xF0

# paxos_dblock.flags and mode_block.flags
DBLOCK_FL_RELEASED: Final = 0x1
MBLOCK_SHARED: Final = 0x1

# request_record.force_mode
REQ_FORCE_NONE: Final = 0
REQ_FORCE: Final = 1
REQ_GRACEFUL: Final = 2

LEADER_RECORD_SIZE: Final = 200
LEADER_CHECKSUM_LEN: Final = 168
LEADER_COMPARE_LEN: Final = 152
DBLOCK_SIZE: Final = 56
DBLOCK_CHECKSUM_LEN: Final = 48
MODE_BLOCK_OFFSET: Final = 128
MODE_BLOCK_SIZE: Final = 16
REQUEST_RECORD_SIZE: Final = 24
HOST_BITMAP_OFFSET: Final = 256
HOST_BITMAP_SIZE: Final = 256

DEFAULT_MAX_HOSTS: Final = 2000
"""The absolute upper bound for a host_id, whatever the geometry."""

LVB_SECTOR_INDEX: Final = 2002
"""The LVB sector index inside a resource area, fixed for every geometry (§6)."""

MiB: Final = 1024 * 1024
