"""One camera of the multi-camera section: a process that publishes a video's decoded frames at 30 fps.

    python -m bench.workloads.camera_publisher VIDEO ADDRESS RESULT_JSON

The frames are decoded before the flow subscribes (preloaded), then sent on a
monotonic schedule (frame i at start + i/30 s) by a `FramePublisher` that waits for
the flow's subscription. The result file holds the wall-clock send time of every
frame, what the publisher dropped, and its lag behind the schedule.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.plan import LIVE_FPS


def publish(video: Path, address: str, result: Path, subscribe_timeout_s: float = 300.0) -> int:
    from facemoment.formats.sample import frame_t_ns
    from facemoment.tools.daemon import FramePublisher
    from bench.workloads.inputs import decode_video

    images = [f.image for f in decode_video(video)]
    publisher = FramePublisher(address, wait_subscribers=1)
    send_wall = []
    max_lag_ns = 0
    try:
        if not publisher.wait_for_subscribers(timeout=subscribe_timeout_s):
            result.write_text(json.dumps({"error": f"no subscriber within {subscribe_timeout_s:.0f} s"}))
            return 1
        period_ns = int(round(1e9 / LIVE_FPS))
        start_ns = time.monotonic_ns()
        for i, image in enumerate(images):
            due = start_ns + i * period_ns
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)  # pacing the stream, not synchronisation
            max_lag_ns = max(max_lag_ns, time.monotonic_ns() - due)
            send_wall.append(time.time_ns())
            publisher.publish(i, frame_t_ns(i), image)
        sent, dropped = publisher.sent, publisher.dropped
    finally:
        publisher.close()
    result.write_text(json.dumps({
        "frames": len(images), "sent": sent, "dropped": dropped, "send_wall_ns": send_wall,
        "max_schedule_lag_ms": round(max_lag_ns / 1e6, 2),
        "size": [int(images[0].shape[1]), int(images[0].shape[0])] if images else None,
    }))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(publish(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
