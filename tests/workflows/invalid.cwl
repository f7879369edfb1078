#!/usr/bin/env cwl-runner
# Invalid on purpose: the step reads from an input the workflow does not have.
cwlVersion: v1.2
class: Workflow
inputs:
  text: File
outputs:
  count:
    type: File
    outputSource: count_lines/count
steps:
  count_lines:
    run: tools/count_lines.cwl
    in:
      file: no_such_input
    out: [count]
