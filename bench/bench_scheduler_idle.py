"""The idle cost of the local scheduler (issue 17): CPU time of this process over an interval,
without and then with N schedule mappings polling a paused clock (as in an idle stack).

    .venv/bin/python bench/bench_scheduler_idle.py [--mappings 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any

from dataharvest_local.mappings import Activity
from dataharvest_local.schedule import ScheduleClock, ScheduleEvent, ScheduleMapping


@dataclass
class _Spec:
    name: str


@dataclass
class _Worker:
    """Never invoked: the paused clock keeps every schedule from coming due."""

    spec: Any


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def share_of_a_core(seconds: float) -> float:
    start = cpu_seconds()
    time.sleep(seconds)
    return (cpu_seconds() - start) / seconds * 100


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mappings", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    stop = threading.Event()
    clock = ScheduleClock(paused=True)
    mappings = [
        ScheduleMapping(
            _Worker(_Spec(f"f{i}")),  # type: ignore[arg-type]
            Activity(),
            stop,
            event=ScheduleEvent("rate(15 minutes)"),
            index=i,
            clock=clock,
            region="eu-west-1",
            account="123456789012",
            function_arn=f"arn:aws:lambda:eu-west-1:123456789012:function:f{i}",
        )
        for i in range(args.mappings)
    ]
    without = share_of_a_core(args.seconds)
    for mapping in mappings:
        mapping.start()
    time.sleep(1)  # past the first polls
    with_them = share_of_a_core(args.seconds)
    stop.set()
    print(
        f"idle process: {without:.3f}% of one core; with {args.mappings} schedule mappings: "
        f"{with_them:.3f}%"
    )


if __name__ == "__main__":
    main()
