"""The Nipype execution plugin of a run: checked before anything runs, and whose worker
processes never outlive the run.

:func:`make_plugin` builds the plugin object from ``--plugin``/``--plugin-config`` while
the inputs are checked, so an unknown plugin or bad ``plugin_args`` is a usage error (64),
not a traceback. For MultiProc, :class:`MultiProcPlugin` gives each worker process a
parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere a watchdog thread that
polls the parent's pid), so ``kill -9`` of the main process takes its workers with it, and
:func:`stop_workers` ends them when the main process is told to stop (SIGTERM, Ctrl-C).
Both local plugins write a participant's derivatives and report as soon as it is done:
MultiProc runs ready datasinks even while the workers are busy, and :class:`LinearPlugin`
runs one participant after the other. A process that already ran torch on several threads
(a notebook, a test session, another pipeline) starts its MultiProc workers with ``spawn``
instead of ``fork`` (:func:`worker_start_method`): a forked worker's first parallel
convolution waits forever on the parent's OpenMP thread pool, which does not survive fork.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from traceback import format_exception
from typing import Any

import networkx as nx
import numpy as np
from nipype.pipeline import plugins
from nipype.pipeline.engine import MapNode
from nipype.pipeline.plugins import multiproc
from nipype.utils.misc import str2bool

from bids_sr.config import Config
from bids_sr.errors import EXIT_USAGE, BIDSError

_PR_SET_PDEATHSIG = 1


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def bind_to_parent(parent: int) -> None:
    """Make the calling (worker) process die when ``parent`` does."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def worker_start_method(requested: str | None = None) -> str | None:
    """How MultiProc starts its workers: ``requested`` (``plugin_args['mp_context']``) when
    given; ``"spawn"`` when this process imported torch and runs it on more than one thread
    (GNU OpenMP's thread pool does not survive ``fork``: once torch ran a parallel region
    here, a forked worker's first convolution hangs); else None (the platform's default,
    ``fork`` on Linux: the command line never runs torch in the main process, so its workers
    start without re-importing anything)."""
    if requested:
        return requested
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > 1:
        return "spawn"
    return None


def _worker_initializer(cwd: str, parent: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the main process's handler
    bind_to_parent(parent)
    multiproc.process_initializer(cwd)


class WorkerDied(RuntimeError):
    """A worker process ended without returning its node's result (killed, out of memory,
    crashed)."""


class MultiProcPlugin(multiproc.MultiProcPlugin):
    """Nipype's MultiProc whose workers exit with the main process, and whose run fails
    (instead of waiting forever) when a worker dies: Nipype's own callback raises on a
    broken pool's future, the exception is swallowed by ``concurrent.futures`` and the task
    never reports back. Same class name, so MapNodes and logs see ``MultiProc``."""

    def __init__(self, plugin_args: dict[str, Any] | None = None):
        super().__init__(plugin_args=plugin_args)
        # replace the pool before any worker starts (processes start at the first submit)
        self.pool.shutdown(wait=False)
        context = multiproc.mp.get_context(worker_start_method(self.plugin_args.get("mp_context")))
        self.pool = ProcessPoolExecutor(
            max_workers=self.processors,
            initializer=_worker_initializer,
            initargs=(self._cwd, os.getpid()),
            mp_context=context,
        )

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        """Run the ready datasinks and reports first, then schedule as Nipype does.

        Nipype's MultiProc submits nothing while the running nodes hold every processor,
        not even a node that runs in the main process without a worker; a subject's
        derivatives and report then waited for another subject's long training. Those
        nodes (``run_without_submitting``: they copy files and draw a report) take no
        worker, so they run here as soon as their inputs are ready."""
        # until none is ready: a sink makes the merges ready, the merges the report
        while self._run_local_nodes(updatehash, graph):
            pass
        super()._send_procs_to_workers(updatehash=updatehash, graph=graph)

    def _run_local_nodes(self, updatehash, graph) -> int:
        """Run the ready ``run_without_submitting`` nodes here; return how many ran."""
        ready = np.flatnonzero(~self.proc_done & (self.depidx.sum(axis=0) == 0).__array__())
        local = [jobid for jobid in ready if self.procs[jobid].run_without_submitting
                 and not isinstance(self.procs[jobid], MapNode)]  # fmt: skip
        for jobid in local:
            node = self.procs[jobid]
            self.proc_done[jobid] = True
            self.proc_pending[jobid] = True
            if self._local_hash_check(jobid, graph):
                continue
            try:
                node.run(updatehash=updatehash)
            except Exception:
                result = {"result": None, "traceback": format_exception(*sys.exc_info())}
                self._run_errors.append(result["traceback"])
                self._clean_queue(jobid, graph, result=result)
            self._task_finished_cb(jobid)
            self._remove_node_dirs()
            self._stats = None  # Nipype logs its queue again
        return len(local)

    def _submit_job(self, node, updatehash=False):
        self._taskid += 1
        taskid = self._taskid
        if getattr(node.interface, "terminal_output", "") == "stream":
            node.interface.terminal_output = "allatonce"  # as Nipype: no streaming outputs
        future = self.pool.submit(multiproc.run_node, node, updatehash, taskid)
        future.add_done_callback(functools.partial(self._task_done, taskid, node.fullname))
        self._task_obj[taskid] = future
        return taskid

    def _task_done(self, taskid: int, name: str, future) -> None:
        try:
            result = future.result()
        except BaseException as exc:  # the pool broke: the worker is gone
            text = f"{WorkerDied.__module__}.WorkerDied: the worker process running {name} " \
                   f"died ({type(exc).__name__}: {exc})\n"  # fmt: skip
            result = {"result": None, "taskid": taskid,
                      "traceback": ["Traceback (most recent call last):\n", text]}  # fmt: skip
        self._taskresult[taskid] = result


class LinearPlugin(plugins.LinearPlugin):
    """Nipype's Linear, one connected part of the graph (one participant) after the other.

    Nipype runs the nodes in one topological order of the whole graph, generation by
    generation: every participant's super-resolution first, then every datasink, so no
    participant's files appear before the last one is computed. Here each connected
    component runs in turn; a failure in one does not stop the others (unless
    ``stop_on_first_crash``), and the first error is raised at the end, as Nipype does."""

    def run(self, graph, config, updatehash=False):

        order = {node: index for index, node in enumerate(graph.nodes())}
        parts = sorted(nx.weakly_connected_components(graph),
                       key=lambda part: min(order[node] for node in part))  # fmt: skip
        errors = []
        for part in parts:
            try:
                super().run(graph.subgraph(part).copy(), config, updatehash=updatehash)
            except Exception as exc:
                errors.append(exc)
                if str2bool(config["execution"]["stop_on_first_crash"]):
                    break
        if errors:
            raise errors[0]


def stop_workers(runner: Any) -> None:
    """Kill the worker processes of a MultiProc ``runner`` (no-op for other plugins)."""
    pool = getattr(runner, "pool", None)
    if not isinstance(pool, ProcessPoolExecutor):
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def check_node_memory(workflow: Any, config: Config) -> None:
    """BIDSError (64) when a node declares more memory than MultiProc may use
    (``--mem-gb`` or ``plugin_args: memory_gb``): Nipype would only warn, then run it anyway
    past the limit, or, under 0.01 GB, wait for ever."""
    settings = config.plugin_settings()
    limit = settings["plugin_args"].get("memory_gb")
    if settings["plugin"] not in ("MultiProc", "LegacyMultiProc") or limit is None:
        return
    biggest = max(workflow._get_all_nodes(), key=lambda node: node.mem_gb, default=None)
    if biggest is None or biggest.mem_gb <= limit:
        return
    given = "plugin_args memory_gb" if "memory_gb" in config.nipype.plugin_args else "--mem-gb"
    raise BIDSError(f"{given} {limit:g}: node {biggest.fullname} declares {biggest.mem_gb:g} GB; "
                    "allow at least that much", EXIT_USAGE)  # fmt: skip


def make_plugin(config: Config) -> Any:
    """The plugin object for ``Workflow.run``; BIDSError (64) for an unknown plugin or
    ``plugin_args`` it refuses."""
    settings = config.plugin_settings()
    name, args = settings["plugin"], settings["plugin_args"]
    if not isinstance(name, str) or not name.isidentifier():
        raise BIDSError(f"--plugin {name!r}: not a Nipype plugin name", EXIT_USAGE)
    if name in ("MultiProc", "LegacyMultiProc"):
        for key in ("n_procs", "n_gpu_procs", "memory_gb"):
            value = args.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not 0 < value < float("inf")):  # NaN too  # fmt: skip
                raise BIDSError(f"plugin_args: {key} must be a positive number, got {value!r}",
                                EXIT_USAGE)  # fmt: skip
    ours = {"MultiProc": MultiProcPlugin, "Linear": LinearPlugin}
    cls = ours.get(name) or getattr(plugins, f"{name}Plugin", None)
    if cls is None:
        known = sorted(n[: -len("Plugin")] for n in dir(plugins) if n.endswith("Plugin") and n[0]
                       .isupper() and n != "Plugin")  # fmt: skip
        raise BIDSError(f"--plugin {name}: unknown Nipype plugin (choose from "
                        f"{', '.join(known)})", EXIT_USAGE)  # fmt: skip
    try:
        return cls(plugin_args=args)
    except Exception as exc:  # plugins raise anything for arguments they cannot use
        raise BIDSError(f"plugin_args for {name} {args}: {type(exc).__name__}: {exc}",
                        EXIT_USAGE) from exc  # fmt: skip
