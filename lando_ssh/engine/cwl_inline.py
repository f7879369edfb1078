"""A CWL rewrite made as the workflow is staged: each process one step alone runs, moved into that step."""
from __future__ import annotations

from typing import Any

from lando_ssh import exactjson
from lando_ssh.prepared import dicts


def inline_single_use_processes(packed: Any) -> Any:
    """The packed workflow with each `$graph` process that exactly one step runs moved into that step.

    cwltool resolves a step's `run: "#ref"` again against a document it has already upgraded to its
    internal CWL version, which loads a second schema: ~0.4 s on every run here. An inline `run` is
    built from the document already loaded. A process named anywhere else, or by several steps,
    stays in the graph (a second inline copy would repeat its ids). So does everything when the document
    holds a `$import` (a type one process defines and another imports again): an id inside a moved process
    is no longer found from the graph's top. Returns a new document.
    """
    graph = packed.get("$graph") if isinstance(packed, dict) else None
    if not isinstance(graph, list) or any("$import" in obj for obj in dicts(packed)):
        return packed
    doc = exactjson.loads(exactjson.dumps(packed))
    by_id = {p["id"]: p for p in doc["$graph"] if isinstance(p, dict) and isinstance(p.get("id"), str)}
    mentions: dict[str, int] = {}

    def count(value: Any, key: str = "") -> None:
        if isinstance(value, str) and value in by_id and key != "id":
            mentions[value] = mentions.get(value, 0) + 1
        elif isinstance(value, dict):
            for k, v in value.items():
                count(v, k)
        elif isinstance(value, list):
            for v in value:
                count(v, key)

    count(doc)
    movable = {i: p for i, p in by_id.items() if mentions.get(i) == 1 and i != "#main"}
    moved: set[str] = set()

    def inline(process: dict) -> None:
        steps = process.get("steps")
        for step in steps if isinstance(steps, list) else []:
            run = step.get("run") if isinstance(step, dict) else None
            if isinstance(run, str) and run in movable and run not in moved:
                moved.add(run)
                step["run"] = movable[run]
                inline(movable[run])
            elif isinstance(run, dict):
                inline(run)

    if "#main" not in by_id:
        return packed
    inline(by_id["#main"])
    doc["$graph"] = [p for p in doc["$graph"] if not (isinstance(p, dict) and p.get("id") in moved)]
    return doc


