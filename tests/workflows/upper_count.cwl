#!/usr/bin/env cwl-runner
# Two steps: uppercase two files together, then count the lines of the result.
cwlVersion: v1.2
class: Workflow
doc: Uppercase `text` followed by `more` into upper.txt, then count its lines into count.txt.
requirements:
  MultipleInputFeatureRequirement: {}
inputs:
  text: File
  more: File
outputs:
  upper:
    type: File
    outputSource: uppercase/upper
  count:
    type: File
    outputSource: count_lines/count
steps:
  uppercase:
    run: tools/upper.cwl
    in:
      files:
        source: [text, more]
        linkMerge: merge_flattened
    out: [upper]
  count_lines:
    run: tools/count_lines.cwl
    in:
      file: uppercase/upper
    out: [count]
