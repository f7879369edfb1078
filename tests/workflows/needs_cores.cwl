#!/usr/bin/env cwl-runner
# Asks for 3 cores and 3000 MiB: for flavor choice tests (the local m1.large has 4 vCPUs, 8192 MB).
cwlVersion: v1.2
class: CommandLineTool
doc: Writes the number of cores cwltool granted into cores.txt.
requirements:
  ResourceRequirement: {coresMin: 3, ramMin: 3000}
baseCommand: [sh, -c, 'echo "$0" > cores.txt']
arguments: [$(runtime.cores)]
inputs: []
outputs:
  cores:
    type: File
    outputBinding: {glob: cores.txt}
