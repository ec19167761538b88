"""The sweeps' scheduler: their cells run as Dask tasks, on this machine's cores or on a cluster.

    --scheduler local             (default) a LocalCluster here: one worker process per core (``--workers N``),
                                  each running one task at a time with one torch thread (``--threads``)
    --scheduler tcp://HOST:PORT   an existing Dask scheduler: ``dask scheduler`` and ``dask worker`` on a lab
                                  server, dask-jobqueue on Slurm (docs/cluster.md). Its workers need this package,
                                  the weights and the data at the same paths (a shared file system)

The lead process (the one the command runs in) submits the tasks (a task may take another's result: a
calibration that several cells use is one task, and the cells wait for it), receives each result as it finishes,
in any order, and is the only process that writes results. A worker that dies mid-task is replaced by its nanny
and the task rerun, up to ``distributed.scheduler.allowed-failures`` times (then the sweep stops with one line);
nothing a dead task computed reaches a file. bench.psnr_table, bench.minmax_study, bench.denorm_format and
bench.scale_bits use it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator

from golden.errors import UserError

LOCAL = "local"
CONNECT_TIMEOUT_S = 5
_ADDRESS = re.compile(r"tcp://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")


def add_arguments(ap, what: str = "cells", when=None) -> None:
    """``--scheduler``, ``--workers`` and ``--threads`` on a parser: declared with :mod:`golden.args`' builders on
    its ``Parser`` (``when``: the mode they apply in), else plain argparse options that :func:`check_arguments`
    checks after parsing."""
    from golden.args import JOBS_MAX, THREADS_MAX, Parser, When

    helps = {"scheduler": f"where the {what} run: 'local' (default: a Dask LocalCluster, one worker process per core) "
                          "or the address of a Dask scheduler, tcp://HOST:PORT (docs/cluster.md)",
             "workers": "--scheduler local: worker processes (default: one per core)",
             "threads": "torch threads per task (default 1)"}
    if isinstance(ap, Parser):
        ap.text("--scheduler", _scheduler_value, when=when, default=LOCAL, help=helps["scheduler"])
        ap.integer("--workers", 1, JOBS_MAX, when=(When("scheduler", LOCAL),) + ((when,) if when else ()),
                   help=helps["workers"])
        ap.integer("--threads", 1, THREADS_MAX, when=when, default=1, help=helps["threads"])
        return
    ap.add_argument("--scheduler", default=LOCAL, help=helps["scheduler"])
    ap.add_argument("--workers", type=int, help=helps["workers"])
    ap.add_argument("--threads", type=int, default=1, help=helps["threads"])


def _scheduler_value(text: str) -> str:
    if not _valid_scheduler(text):
        raise ValueError(f"must be 'local' or a Dask scheduler address tcp://HOST:PORT, got {text!r}")
    return text


def check_arguments(args) -> None:
    """UserError (one line) for a malformed --scheduler, --workers or --threads; nothing is started."""
    check_scheduler(args.scheduler)
    if args.workers is not None and (args.workers < 1 or args.scheduler != LOCAL):
        raise UserError("--workers must be a positive integer, and applies to --scheduler local only"
                        if args.scheduler == LOCAL else "--workers applies to --scheduler local only (a cluster's "
                                                        "workers are started with it)")
    if args.threads is None or args.threads < 1:
        raise UserError(f"--threads must be a positive integer, got {args.threads}")


def _valid_scheduler(text: str) -> bool:
    m = _ADDRESS.fullmatch(text or "")
    return text == LOCAL or bool(m and 0 < int(m["port"]) < 65536)


def check_scheduler(text: str) -> str:
    if not _valid_scheduler(text):
        raise UserError(f"--scheduler must be 'local' or a Dask scheduler address tcp://HOST:PORT, got {text!r}")
    return text


#: A long set is cut into tasks of about this many HR pixels (Urban100: 2 to 3 images, B100: 13; EDSR about 10 s,
#: RDN about a minute of one core), so that workers share a set and a lost worker costs little.
TASK_PIXELS = 2_000_000


def chunks_by_pixels(paths, budget: int | None = None) -> list[list[int]]:
    """The indices of ``paths`` (images) cut, in order, into runs of about ``budget`` pixels (default
    TASK_PIXELS; at least one image each). Reads only the images' headers."""
    from PIL import Image

    budget = TASK_PIXELS if budget is None else budget
    chunks, size = [[]], 0
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            px = im.size[0] * im.size[1]
        if chunks[-1] and size + px > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += px
    return chunks if chunks[0] else []


def local_workers(threads: int = 1) -> int:
    """One worker per ``threads`` cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) // threads)


@contextlib.contextmanager
def connect(scheduler: str, workers: int | None = None, threads: int = 1) -> Iterator:
    """A ``distributed.Client``: on a new LocalCluster (``scheduler == 'local'``; loopback only, no dashboard) or
    connected to the scheduler at ``scheduler`` (UserError when it does not answer within CONNECT_TIMEOUT_S)."""
    from distributed import Client, LocalCluster

    check_scheduler(scheduler)
    if scheduler == LOCAL:
        n = workers or local_workers(threads)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"no Dask scheduler answers at {scheduler} within {CONNECT_TIMEOUT_S} s "
                        f"({type(exc).__name__})") from None
    with client:
        yield client


def call(threads: int, fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on a worker with ``threads`` torch threads and no progress bars of its own (the
    lead shows one over the whole sweep): what every task goes through."""
    import functools

    import torch
    import tqdm

    if not getattr(tqdm.tqdm, "_dfsq_quiet", False):
        tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)
        tqdm.tqdm._dfsq_quiet = True
    torch.set_num_threads(threads)
    return fn(*args, **kwargs)


def submit(client, threads: int, name: str, fn, *args, **kwargs):
    """A task running ``fn`` (a module-level function: workers import it) with ``threads`` torch threads; ``args``
    may hold other tasks' futures (Dask passes their results). ``name`` (with a random suffix: runs sharing a
    scheduler never share a task) names it in errors and on the scheduler's dashboard."""
    return client.submit(call, threads, fn, *args, key=f"{name}-{uuid.uuid4().hex[:8]}", pure=False, **kwargs)


def finished(client, futures) -> Iterator:
    """(future, result) for each of ``futures`` as it finishes; a task's error becomes a one-line UserError (a
    UserError raised in the task keeps its text)."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    for fut in as_completed(futures):
        try:
            result = fut.result()
        except UserError:
            raise
        except KilledWorker:
            raise UserError(f"task {fut.key} killed its worker {1 + _allowed_failures()} times; giving up") from None
        except Exception as exc:  # noqa: BLE001 - a task's failure, reported in one line
            first = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(f"task {fut.key} failed: {type(exc).__name__}: {first[:200]}") from None
        yield fut, result


def by_cell(client, cells: dict, on_cell, desc: str = "cells") -> None:
    """Wait for every cell's tasks (``cells``: cell -> its futures, in order) and call ``on_cell(cell, results)``
    here, with the results in the futures' order, as soon as a cell's last task has finished; a progress bar
    counts the cells (and the tasks)."""
    from tqdm import tqdm

    owner = {f.key: (cell, i) for cell, futs in cells.items() for i, f in enumerate(futs)}
    futures = [f for futs in cells.values() for f in futs]
    got: dict = {}
    with tqdm(total=len(cells), desc=desc, unit="cell") as bar:
        for n, (fut, res) in enumerate(finished(client, futures), 1):
            cell, i = owner[fut.key]
            got.setdefault(cell, {})[i] = res
            bar.set_postfix_str(f"{n}/{len(futures)} tasks")
            if len(got[cell]) == len(cells[cell]):
                parts = got.pop(cell)
                on_cell(cell, [parts[j] for j in range(len(parts))])
                bar.update(1)


def _allowed_failures() -> int:
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures"))
