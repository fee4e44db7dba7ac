"""The recorder under many producer threads: every change is written, none lands in a batch the
writer has already taken (it once read its target dict before taking the lock, so a change could
be merged into a batch being written, breaking the write or getting lost)."""

import sys
import threading

from texium.core.datastore import open_datastore
from texium.core.scheduling.recorder import Recorder


def test_changes_from_many_threads_are_all_written(tmp_path, caplog):
    datastore = open_datastore(None, "texium", str(tmp_path))  # the recorder's logic is the store's either way
    ids = datastore.executions.insert_many([{"status": "running", "n": 0} for _ in range(4000)])
    recorder = Recorder(datastore)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen every race window
    try:

        def produce(part):
            for doc_id in part:
                recorder.execution(doc_id, {"status": "completed"})

        threads = [threading.Thread(target=produce, args=(ids[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert recorder.flush(60)
    recorder.stop(5)
    left = datastore.executions.count({"status": "running"})
    assert left == 0, f"{left} changes were lost"
    assert "Cannot write execution records" not in caplog.text
