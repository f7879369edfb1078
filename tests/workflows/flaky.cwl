#!/usr/bin/env cwl-runner
# Fails until a flag file exists: for restart tests (the test creates the flag between runs).
cwlVersion: v1.2
class: CommandLineTool
doc: Exits 4 unless the file named by `flag` exists; then writes ok.txt.
baseCommand: [sh, -c, 'if [ -e "$0" ]; then echo ok > ok.txt; else echo "flag $0 is missing" >&2; exit 4; fi']
inputs:
  flag:
    type: string
    inputBinding: {position: 1}
outputs:
  ok:
    type: File
    outputBinding: {glob: ok.txt}
