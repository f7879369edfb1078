#!/usr/bin/env cwl-runner
# A workflow input whose default is a local File next to the workflow.
cwlVersion: v1.2
class: Workflow
doc: |
  Uppercase `text` followed by `reference` (default data/reference.txt, relative to this
  file) into upper.txt.
requirements:
  MultipleInputFeatureRequirement: {}
inputs:
  text: File
  reference:
    type: File
    default:
      class: File
      location: data/reference.txt
outputs:
  upper:
    type: File
    outputSource: uppercase/upper
steps:
  uppercase:
    run: tools/upper.cwl
    in:
      files:
        source: [text, reference]
        linkMerge: merge_flattened
    out: [upper]
