#!/usr/bin/env cwl-runner
# Two steps; the second one fails (exit code 3, a message on stderr).
cwlVersion: v1.2
class: Workflow
doc: Step `prepare` writes prepared.txt; step `explode` prints to stderr and exits 3.
inputs: []
outputs:
  result:
    type: File
    outputSource: explode/result
steps:
  prepare:
    run:
      class: CommandLineTool
      baseCommand: [echo, prepared]
      inputs: []
      stdout: prepared.txt
      outputs:
        prepared: stdout
    in: {}
    out: [prepared]
  explode:
    run:
      class: CommandLineTool
      baseCommand: [sh, -c, 'cat "$0" && echo "explode: something went wrong on purpose" >&2 && exit 3']
      inputs:
        prepared:
          type: File
          inputBinding: {position: 1}
      stdout: explode.txt
      outputs:
        result: stdout
    in:
      prepared: prepare/prepared
    out: [result]
