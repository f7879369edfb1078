#!/usr/bin/env cwl-runner
# A tool with a Directory input and a Directory output.
cwlVersion: v1.2
class: CommandLineTool
doc: |
  List every file under `dir` (sorted, relative paths) with its contents into listing.txt,
  and copy `dir` to the output Directory `copy`.
baseCommand: [sh, -c]
arguments:
  - 'cd "$0" && for f in `find . -type f | sort`; do echo "$f: `cat "$f"`"; done > "$1/listing.txt" && cp -R "$0" "$1/copy"'
  - $(inputs.dir.path)
  - $(runtime.outdir)
inputs:
  dir: Directory
outputs:
  listing:
    type: File
    outputBinding: {glob: listing.txt}
  copy:
    type: Directory
    outputBinding: {glob: copy}
