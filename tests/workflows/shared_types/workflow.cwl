#!/usr/bin/env cwl-runner
# The workflow and its step's tool import the same record type: cwltool packs the tool's import
# as a `$import` of the type already in the packed document.
cwlVersion: v1.2
class: Workflow
requirements:
  SchemaDefRequirement:
    types:
      - $import: types.yml
inputs:
  s: types.yml#sample
outputs:
  said:
    type: File
    outputSource: say/said
steps:
  say:
    run: say.cwl
    in: {s: s}
    out: [said]
