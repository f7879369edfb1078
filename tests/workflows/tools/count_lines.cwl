#!/usr/bin/env cwl-runner
# Counts the lines of one file (wc -l reading stdin prints the number alone).
cwlVersion: v1.2
class: CommandLineTool
doc: Count the lines of a file into count.txt.
baseCommand: [wc, -l]
inputs:
  file: File
stdin: $(inputs.file.path)
stdout: count.txt
outputs:
  count:
    type: stdout
