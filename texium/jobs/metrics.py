"""SystemMetricsJob: sample the host and the server process into `system_metrics`."""

from __future__ import annotations

import os
import socket
import time

import psutil

from texium.core.timeutil import utcnow
from texium.jobs import _util
from texium.jobs.base import JobBase

COLLECTION = "system_metrics"
DEFAULT_INTERVAL = 0.5


def _existing_dir(path: str) -> str:
    """The nearest existing directory at or above `path` (disk usage of a not-yet-made dir)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


class SystemMetricsJob(JobBase):
    """Job to collect system metrics"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to collect system metrics",
            "arguments": [
                {
                    "name": "interval",
                    "type": "number",
                    "required": False,
                    "description": "pub_kwargs: seconds over which CPU usage is "
                    f"measured (default {DEFAULT_INTERVAL:g}, at most 10)",
                },
            ],
            "example_arguments": {"pub_args": [], "pub_kwargs": {}},
            "notes": (
                "Stores one document per run in the system_metrics collection: CPU %, load average, memory "
                "and swap, disk usage of the data directory, the server process's RSS and threads, and the "
                "datastore size. GET /api/scheduler/metrics/system?limit=N lists the latest samples; "
                "DataCleanupJob with collections ['system_metrics'] prunes old ones."
            ),
        }

    def run(self, *args, **kwargs):
        _util.check_arguments(args, kwargs, 0, "no pub_args", ("interval",))
        interval = _util.number("interval", kwargs.get("interval", DEFAULT_INTERVAL), minimum=0, maximum=10)

        cpu_percent = psutil.cpu_percent(interval=interval) if interval > 0 else psutil.cpu_percent(interval=None)
        try:
            load1, load5, load15 = psutil.getloadavg()
        except (AttributeError, OSError):  # pragma: no cover - platforms without a load average
            load1 = load5 = load15 = None
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        data_dir = _util.data_dir(self.context.config)
        disk_path = _existing_dir(data_dir)
        disk = psutil.disk_usage(disk_path)
        process = psutil.Process()
        with process.oneshot():
            rss = process.memory_info().rss
            threads = process.num_threads()
            try:
                open_files = process.num_fds()
            except (AttributeError, psutil.Error):  # pragma: no cover - Windows
                open_files = None
            process_uptime = max(0.0, time.time() - process.create_time())
        datastore = self.context.datastore
        try:
            datastore_size = int(datastore.size_bytes())
        except Exception as exc:  # noqa: BLE001 - a sample without the size beats no sample
            self.context.logger.warning("datastore size unavailable: %s", exc)
            datastore_size = None

        now = utcnow()
        sample = {
            "created_at": now,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "cpu_percent": cpu_percent,
            "cpu_count": psutil.cpu_count() or None,
            "load_avg_1m": _round(load1),
            "load_avg_5m": _round(load5),
            "load_avg_15m": _round(load15),
            "memory_total_bytes": memory.total,
            "memory_available_bytes": memory.available,
            "memory_used_bytes": memory.total - memory.available,
            "memory_percent": memory.percent,
            "swap_total_bytes": swap.total,
            "swap_used_bytes": swap.used,
            "swap_percent": swap.percent,
            "disk_path": data_dir,
            "disk_total_bytes": disk.total,
            "disk_used_bytes": disk.used,
            "disk_free_bytes": disk.free,
            "disk_percent": disk.percent,
            "process_rss_bytes": rss,
            "process_threads": threads,
            "process_open_fds": open_files,
            "process_uptime_seconds": round(process_uptime, 1),
            "datastore_provider": getattr(datastore, "provider", None),
            "datastore_size_bytes": datastore_size,
            "job_id": self.context.job_id,
            "execution_id": self.context.execution_id,
        }
        sample_id = datastore.collection(COLLECTION).insert(sample)

        load = "n/a" if load1 is None else f"{load1:.2f} {load5:.2f} {load15:.2f}"
        return "\n".join(
            [
                f"System metrics sample {sample_id} stored",
                f"CPU: {cpu_percent:.1f}% of {sample['cpu_count']} CPUs, load {load}",
                f"Memory: {memory.percent:.1f}% used ({_util.human_bytes(sample['memory_used_bytes'])} of "
                f"{_util.human_bytes(memory.total)}), swap {swap.percent:.1f}%",
                f"Disk ({disk_path}): {disk.percent:.1f}% used, {_util.human_bytes(disk.free)} free of "
                f"{_util.human_bytes(disk.total)}",
                f"Process: RSS {_util.human_bytes(rss)}, {threads} threads",
                f"Datastore ({sample['datastore_provider']}): {_util.human_bytes(datastore_size)}",
            ]
        )


def _round(value):
    return None if value is None else round(value, 2)
