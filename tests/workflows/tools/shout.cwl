#!/usr/bin/env cwl-runner
# Uppercases one file into <nameroot>.upper.txt, so scattered outputs do not collide.
cwlVersion: v1.2
class: CommandLineTool
doc: Uppercase one file into NAMEROOT.upper.txt.
baseCommand: [tr, a-z, A-Z]
inputs:
  sample: File
stdin: $(inputs.sample.path)
stdout: $(inputs.sample.nameroot).upper.txt
outputs:
  shouted:
    type: stdout
