#!/usr/bin/env cwl-runner
cwlVersion: v1.2
class: Workflow
doc: Hands back a Directory and a File that lies inside it, as given.
inputs:
  d: Directory
  f: File
outputs:
  od: {type: Directory, outputSource: d}
  of: {type: File, outputSource: f}
steps: []
