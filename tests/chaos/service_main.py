"""A trip-booking service (``services_demo.trip_booking.services``) with a seeded ``random``.

The service draws its transient failures from the module-level ``random``;
seeding it here makes each process's sequence of failures reproducible
(the interleaving of tasks across processes still varies). Every other
argument is passed on unchanged::

    python -m tests.chaos.service_main --seed 7 car --broker-url local://127.0.0.1:7233 --db car.db
"""

from __future__ import annotations

import random
import sys

import typer

from services_demo.trip_booking.services import main as service_main


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) >= 2 and argv[0] == "--seed":
        random.seed(int(argv[1]))
        argv = argv[2:]
    sys.argv = [sys.argv[0], *argv]
    typer.run(service_main)


if __name__ == "__main__":
    main()
