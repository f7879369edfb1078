#!/usr/bin/env cwl-runner
# Counts its input files; the test submits it with a job order of 1,500 Files (validation time).
cwlVersion: v1.2
class: CommandLineTool
requirements:
  InlineJavascriptRequirement: {}
inputs:
  files: File[]
  label: string
baseCommand: echo
arguments: [$(inputs.label), $(inputs.files.length)]
stdout: count.txt
outputs:
  count: stdout
