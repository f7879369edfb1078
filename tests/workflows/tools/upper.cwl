#!/usr/bin/env cwl-runner
# Concatenates its input files and uppercases the text.
cwlVersion: v1.2
class: CommandLineTool
doc: Concatenate the input files and uppercase the result into upper.txt.
baseCommand: [sh, -c, 'cat "$@" | tr a-z A-Z', upper]
inputs:
  files:
    type: File[]
    inputBinding: {position: 1}
stdout: upper.txt
outputs:
  upper:
    type: stdout
