#!/usr/bin/env cwl-runner
# A scatter step over an array of files, then a gather step.
cwlVersion: v1.2
class: Workflow
doc: |
  Uppercase each of `samples` into NAMEROOT.upper.txt (scattered), then concatenate those
  into upper.txt (gathered).
requirements:
  ScatterFeatureRequirement: {}
inputs:
  samples: File[]
outputs:
  shouted:
    type: File[]
    outputSource: shout/shouted
  total:
    type: File
    outputSource: gather/upper
steps:
  shout:
    run: tools/shout.cwl
    scatter: sample
    in:
      sample: samples
    out: [shouted]
  gather:
    run: tools/upper.cwl
    in:
      files: shout/shouted
    out: [upper]
