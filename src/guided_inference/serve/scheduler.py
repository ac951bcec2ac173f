"""Slots and a bounded queue, on the server's event loop.

An embedded pair runs one sequence at a time (one KV cache per model): one slot. HTTP
backends batch on their own servers: ``--concurrency`` slots pass that many requests
through at once. A request takes a free slot at once, or waits in a FIFO queue of at most
``max_queue`` requests; beyond that it is refused (``QueueFull``: HTTP 503 with a
``Retry-After`` of the expected wait). A waiting request whose client goes away leaves the
queue; a running one gives its slot back when its generation thread ends (``release``).

Every method runs on the event loop's thread (no locks).
"""
from __future__ import annotations

import asyncio
import math
from collections import deque

from ..config import check_int


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, queued: int):
        super().__init__(f"the server is busy: {queued} request(s) already wait for the model pair; "
                         f"retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Scheduler:
    def __init__(self, slots: int, max_queue: int, *, first_guess_s: float = 5.0):
        check_int("concurrency", slots, 1)
        check_int("max_queue", max_queue, 0)
        self.slots = slots
        self.max_queue = max_queue
        self.running = 0
        self.waiting: deque[asyncio.Future] = deque()
        self.mean_s = first_guess_s  # running mean of a request's time in its slot (for Retry-After)
        self.served = 0

    @property
    def queued(self) -> int:
        return sum(1 for f in self.waiting if not f.done())

    def admit(self) -> asyncio.Future:
        """A future that resolves when this request holds a slot; ``QueueFull`` if the queue is full."""
        fut = asyncio.get_running_loop().create_future()
        if self.running < self.slots and not self.queued:
            self.running += 1
            fut.set_result(True)
            return fut
        if self.queued >= self.max_queue:
            raise QueueFull(self.retry_after(), self.queued)
        self.waiting.append(fut)
        return fut

    def abandon(self, fut: asyncio.Future) -> None:
        """The request gives up its place: cancel it in the queue, or free the slot it was given."""
        if fut.done() and not fut.cancelled():
            self.release()
        else:
            fut.cancel()
            try:
                self.waiting.remove(fut)
            except ValueError:
                pass

    def release(self, held_s: float | None = None) -> None:
        """A slot is free: hand it to the first waiting request, if any."""
        if held_s is not None:
            self.served += 1
            self.mean_s += (held_s - self.mean_s) / min(self.served, 20)  # mean of the last ~20
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self.running -= 1

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, at the mean time per request."""
        return max(1, math.ceil(self.mean_s * (self.queued + 1) / self.slots))
