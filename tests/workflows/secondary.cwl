#!/usr/bin/env cwl-runner
# A tool whose input and output carry secondaryFiles.
cwlVersion: v1.2
class: CommandLineTool
doc: |
  Read `reads` and its index files (`.bai` next to it, and `^.idx` when present) into
  report.txt, and write sorted.txt with its `.md5` secondary file.
baseCommand: [sh, -c]
arguments:
  - 'cat "$0" "$0.bai" > report.txt && ls "`dirname "$0"`" >> report.txt && sort "$0" > sorted.txt && cksum < sorted.txt > sorted.txt.md5'
  - $(inputs.reads.path)
inputs:
  reads:
    type: File
    secondaryFiles:
      - .bai
      - pattern: ^.idx
        required: false
outputs:
  report:
    type: File
    outputBinding: {glob: report.txt}
  sorted:
    type: File
    outputBinding: {glob: sorted.txt}
    secondaryFiles: [.md5]
