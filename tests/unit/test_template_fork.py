"""What a fork of a template must not share with its siblings (`invoker.template.reseed`):
real forks of this process, each drawing from the generators after the fork."""

from __future__ import annotations

import os
import random

import numpy
import orjson

from invoker.template import reseed


def _draws_in_forks(n: int) -> list[list[float]]:
    """Fork n children that reseed and draw once from `random` and numpy's global generator."""
    results = []
    for _ in range(n):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                reseed()
                os.write(write_fd, orjson.dumps([random.random(), numpy.random.random()]))
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            results.append(orjson.loads(pipe.read()))
        os.waitpid(pid, 0)
    return results


def test_forks_draw_different_random_numbers() -> None:
    numpy.random.seed(1234)  # module-level state the template set, as a function might
    random.seed(1234)
    draws = _draws_in_forks(3)
    assert len({d[0] for d in draws}) == 3  # `random`: reseeded by Python at fork
    assert len({d[1] for d in draws}) == 3  # numpy: reseeded by `reseed`
    # ... and none of them repeats what the template itself draws next.
    assert numpy.random.random() not in {d[1] for d in draws}
