"""The review page: a read-only web server over a run's output directory.

It reads what a run writes (triggers.jsonl, clips/, trig_sends.jsonl, trace.jsonl),
tailing the files as they grow, so the same server shows a live run and a finished
one. Nothing here is imported by the dataflow: the page runs in its own process or
thread and only ever reads files.
"""
