#!/usr/bin/env cwl-runner
# No required inputs: runs without a job order.
cwlVersion: v1.2
class: CommandLineTool
doc: Write `message` (default "hello from lando-ssh") into greeting.txt.
baseCommand: echo
inputs:
  message:
    type: string
    default: hello from lando-ssh
    inputBinding: {position: 1}
stdout: greeting.txt
outputs:
  greeting: stdout
