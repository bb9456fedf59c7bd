"""Post keys: a message's key names it in its session's log, so no two messages may share one,
whichever process posted them."""

from __future__ import annotations

import os

from supervisor._consumers import ReplyConsumer, new_post_key


def test_keys_are_unique_and_an_ask_without_one_gets_one() -> None:
    keys = {new_post_key() for _ in range(10_000)}
    keys |= {ReplyConsumer(1).post_key for _ in range(10_000)}

    assert len(keys) == 20_000
    assert all(24 < len(key) <= 40 and key.isalnum() for key in keys)


def test_a_forked_child_does_not_repeat_its_parents_keys() -> None:
    """A server that forks its workers after importing the library (gunicorn's default)
    must not give two workers the same keys."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next keys, then out without running the parent's cleanup
        os.write(write, " ".join(new_post_key() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split()
    os.close(read)
    parent = [new_post_key() for _ in range(3)]

    assert os.waitstatus_to_exitcode(status) == 0
    assert len(child) == 3
    assert not set(child) & set(parent)
    assert child[0][:24] != parent[0][:24]  # a prefix of its own, not the parent's
