#!/usr/bin/env cwl-runner
# A tool that runs long, with children of its own: for cancel and recovery tests.
cwlVersion: v1.2
class: CommandLineTool
doc: Sleeps `seconds` in two child processes, then writes done.txt.
baseCommand: [sh, -c]
arguments:
  - sleep $0 & sleep $0; wait; echo done > done.txt
  - $(inputs.seconds)
inputs:
  seconds:
    type: int
    default: 300
outputs:
  done:
    type: File
    outputBinding: {glob: done.txt}
