"""Many idle connections watched through one epoll descriptor, which trio waits on as one.

Most of the daemon's connections are idle: a registered process that holds
its leases and says nothing, or a short-lived client between its REGISTER
and its INQUIRE.  Giving each of them a trio task that waits on its socket
costs a task's start and end, and an epoll registration per wait, for
connections that mostly need a few microseconds of work.  Here the idle
ones share one epoll set (level-triggered, input only): one task waits for
the set's descriptor to be readable and then takes the members that are,
without a wait per member.

A member is removed before its socket is given to a task of its own, or
closed while another descriptor (a ``dup``) refers to the same open file:
epoll forgets a descriptor only when the last reference to its open file is
closed, so a member left behind could be reported under a number the kernel
has since given to another socket.  A socket with no other descriptor is
just forgotten (:meth:`SocketWatch.forget_closing`) and closed.

Standard library and trio's one low-level wait only; what a member is (the
daemon's connection) is the caller's.
"""

from __future__ import annotations

import select
import time
from typing import Generic, TypeVar

import trio

Member = TypeVar("Member")

BATCH = 64
"""Ready members taken per wake: the rest stay readable (level-triggered) for the next one."""


class SocketWatch(Generic[Member]):
    """A set of idle sockets (by descriptor) and what each belongs to; :meth:`ready` waits for input on any."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._members: dict[int, Member] = {}

    def __len__(self) -> int:
        return len(self._members)

    def add(self, fd: int, member: Member) -> None:
        """Watch ``fd`` for input (or its peer's close) until :meth:`remove`; OSError (ENOMEM, ENOSPC) adds nothing."""
        self._epoll.register(fd, select.EPOLLIN)
        self._members[fd] = member

    def remove(self, fd: int) -> None:
        """Stop watching ``fd``: before its socket is closed, or waited on anywhere else."""
        del self._members[fd]
        self._epoll.unregister(fd)

    def forget_closing(self, fd: int) -> None:
        """Stop watching ``fd`` whose socket the caller closes next, and which has no other descriptor.

        Closing the one descriptor of an open file takes it out of the
        epoll set: no system call is needed here.
        """
        del self._members[fd]

    async def ready(self) -> list[Member]:
        """The members with input waiting (at most ``BATCH``), once there is at least one.

        Level-triggered: a member whose input is left unread is reported
        again at the next call.
        """
        while True:
            await trio.lowlevel.wait_readable(self._epoll.fileno())
            found = [self._members[fd] for fd, _ in self._epoll.poll(0, BATCH) if fd in self._members]
            if found:
                return found

    def ready_now(self) -> list[Member]:
        """The members with input waiting now (at most ``BATCH``), without waiting: maybe none."""
        return [self._members[fd] for fd, _ in self._epoll.poll(0, BATCH) if fd in self._members]

    def ready_within(self, seconds: float) -> list[Member]:
        """The members with input waiting within ``seconds``, polled without sleeping: maybe none (a busy poll).

        Asleep, the thread would pay a wake-up when input comes; a client
        that is answered usually sends again, or closes, within tens of
        microseconds, and on a virtual machine a wake-up can cost more.
        """
        deadline = time.perf_counter() + seconds
        while not (found := self.ready_now()) and time.perf_counter() < deadline:
            pass
        return found

    def take_all(self) -> list[Member]:
        """Remove every member and return them (the daemon is stopping: the caller closes their sockets)."""
        members = list(self._members.items())
        for fd, _ in members:
            self.remove(fd)
        return [member for _, member in members]

    def close(self) -> None:
        """Close the epoll descriptor (members are not closed: see :meth:`take_all`)."""
        trio.lowlevel.notify_closing(self._epoll.fileno())
        self._epoll.close()
